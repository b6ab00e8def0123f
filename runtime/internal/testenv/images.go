package testenv

import (
	"encoding/json"
	"os"
)

// Image is an AMI that every moto server started here knows by a fixed id
// (moto's MOTO_AMIS_PATH), as an account's AMIs exist before a deployment.
type Image struct {
	ID           string
	Name         string
	Architecture string // x86_64 or arm64
	// RootDeviceName is what DescribeImages reports: Amazon Linux uses
	// /dev/xvda, Ubuntu and many other distributions /dev/sda1.
	RootDeviceName string
}

// The images moto serves. ImageX64 is the sandbox's and the test
// deployments' default profile image.
var (
	ImageX64    = Image{ID: "ami-0123456789abcdef0", Name: "al2023-like-x86_64", Architecture: "x86_64", RootDeviceName: "/dev/xvda"}
	ImageArm64  = Image{ID: "ami-0fedcba9876543210", Name: "al2023-like-arm64", Architecture: "arm64", RootDeviceName: "/dev/xvda"}
	ImageUbuntu = Image{ID: "ami-0a1b2c3d4e5f60718", Name: "ubuntu-like-x86_64", Architecture: "x86_64", RootDeviceName: "/dev/sda1"}
)

// Images are the AMIs moto serves, and the only ones: moto's own stock list
// is not loaded.
var Images = []Image{ImageX64, ImageArm64, ImageUbuntu}

// writeImages writes Images in moto's AMI file format to a temporary file.
func writeImages() (string, error) {
	list := make([]map[string]any, 0, len(Images))
	for _, im := range Images {
		list = append(list, map[string]any{
			"ami_id": im.ID, "name": im.Name, "description": im.Name, "owner_id": "123456789012",
			"public": false, "virtualization_type": "hvm", "architecture": im.Architecture, "state": "available",
			"image_type": "machine", "hypervisor": "xen", "root_device_type": "ebs", "root_device_name": im.RootDeviceName,
			"sriov": "simple",
		})
	}
	b, err := json.Marshal(list)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp("", "jitr-moto-amis-*.json")
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	if _, err := f.Write(b); err != nil {
		return "", err
	}
	return f.Name(), nil
}
