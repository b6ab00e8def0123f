package fleet_test

import (
	"context"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
)

// countingImages counts DescribeImages calls on top of the recording client.
type countingImages struct {
	*testenv.FaultyEC2
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingImages) DescribeImages(ctx context.Context, in *ec2.DescribeImagesInput, o ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	c.mu.Lock()
	for _, id := range in.ImageIds {
		c.calls[id]++
	}
	c.mu.Unlock()
	return c.FaultyEC2.DescribeImages(ctx, in, o...)
}

// volume is one EBS volume an instance starts with.
type volume struct {
	device string
	gib    int32
}

// volumesAtLaunch is what EC2 attaches to an instance launched from an AMI
// (from DescribeImages, as EC2 knows it) with the request's block device
// mappings: the AMI's root volume (8 GiB here) under its root device name;
// a mapping for that name resizes it, a mapping for any other name adds a
// volume.
func volumesAtLaunch(t *testing.T, client *ec2.Client, imageID string, in *ec2.CreateFleetInput) []volume {
	t.Helper()
	out, err := client.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{imageID}})
	if err != nil || len(out.Images) != 1 {
		t.Fatalf("describe image %s: %v", imageID, err)
	}
	vols := []volume{{device: aws.ToString(out.Images[0].RootDeviceName), gib: 8}}
	ov := in.LaunchTemplateConfigs[0].Overrides[0]
	for _, m := range ov.BlockDeviceMappings {
		if aws.ToString(m.DeviceName) == vols[0].device {
			vols[0].gib = aws.ToInt32(m.Ebs.VolumeSize)
			continue
		}
		vols = append(vols, volume{device: aws.ToString(m.DeviceName), gib: aws.ToInt32(m.Ebs.VolumeSize)})
	}
	return vols
}

// TestRootDeviceComesFromTheImage: an Ubuntu-like AMI (root device
// /dev/sda1) gets one volume of the profile's size, as an Amazon Linux one
// (/dev/xvda) does; the launcher asks EC2 about each AMI once.
func TestRootDeviceComesFromTheImage(t *testing.T) {
	n := newNetwork(t)
	_, rec := newLauncher(t, n)
	api := &countingImages{FaultyEC2: rec, calls: map[string]int{}}
	l := fleet.New(api)
	for i, tc := range []struct {
		image  testenv.Image
		gib    int
		wantGB int32
	}{
		{testenv.ImageUbuntu, 100, 100},
		{testenv.ImageX64, 0, 30}, // 0: the launch spec's size
		{testenv.ImageUbuntu, 100, 100},
	} {
		req := n.request(int64(7000 + i))
		req.ImageID, req.VolumeGiB = tc.image.ID, tc.gib
		if _, err := l.Launch(context.Background(), req); err != nil {
			t.Fatalf("launch from %s: %v", tc.image.Name, err)
		}
		inputs := rec.FleetInputs()
		got := volumesAtLaunch(t, n.client, tc.image.ID, inputs[len(inputs)-1])
		if len(got) != 1 || got[0].device != tc.image.RootDeviceName || got[0].gib != tc.wantGB {
			t.Errorf("%s: volumes at launch %v, want one %d GiB volume at %s", tc.image.Name, got, tc.wantGB, tc.image.RootDeviceName)
		}
	}
	if api.calls[testenv.ImageUbuntu.ID] != 1 || api.calls[testenv.ImageX64.ID] != 1 {
		t.Errorf("DescribeImages calls per AMI %v, want one each", api.calls)
	}
}

// TestUnknownImageLaunchesNothing: an AMI EC2 does not know is an invalid
// request, found before any CreateFleet.
func TestUnknownImageLaunchesNothing(t *testing.T) {
	n := newNetwork(t)
	l, rec := newLauncher(t, n)
	req := n.request(7100)
	req.ImageID = "ami-0deadbeefdeadbeef"
	_, err := l.Launch(context.Background(), req)
	if err == nil {
		t.Fatal("launch from an unknown AMI succeeded")
	}
	if len(rec.FleetInputs()) != 0 {
		t.Errorf("%d CreateFleet calls for an unknown AMI", len(rec.FleetInputs()))
	}
}
