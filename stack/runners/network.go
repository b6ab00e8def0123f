package runners

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/ec2"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// networkOut is where runners run.
type networkOut struct {
	vpcID pulumi.StringOutput
	// subnetIDs are the subnets runners launch into; subnetARNs their ARNs
	// (IAM scopes launches to them).
	subnetIDs  pulumi.StringArrayOutput
	subnetARNs pulumi.StringArrayOutput
}

// network uses the caller's VPC or creates one: public subnets across the
// AZs and, with NATGateway, private subnets behind one NAT gateway.
func (d *deployment) network() error {
	n := d.args.Network
	if n.byo() {
		d.net.vpcID = n.VpcID.ToStringOutput()
		d.net.subnetIDs = n.SubnetIDs.ToStringArrayOutput()
		d.net.subnetARNs = d.net.subnetIDs.ApplyT(func(ids []string) []string {
			arns := make([]string, len(ids))
			for i, id := range ids {
				arns[i] = d.ec2ARN("subnet/" + id)
			}
			return arns
		}).(pulumi.StringArrayOutput)
		return nil
	}

	zones, err := d.zones()
	if err != nil {
		return err
	}
	prefix := netip.MustParsePrefix(n.CIDR)

	vpc, err := ec2.NewVpc(d.ctx, d.n("vpc"), &ec2.VpcArgs{
		CidrBlock:          pulumi.String(n.CIDR),
		EnableDnsHostnames: pulumi.Bool(true),
		EnableDnsSupport:   pulumi.Bool(true),
		Tags:               d.tags("Name", d.n("vpc")),
	}, d.opts()...)
	if err != nil {
		return err
	}
	igw, err := ec2.NewInternetGateway(d.ctx, d.n("igw"), &ec2.InternetGatewayArgs{
		VpcId: vpc.ID(), Tags: d.tags("Name", d.n("igw")),
	}, d.opts()...)
	if err != nil {
		return err
	}
	publicRT, err := ec2.NewRouteTable(d.ctx, d.n("public"), &ec2.RouteTableArgs{
		VpcId:  vpc.ID(),
		Routes: ec2.RouteTableRouteArray{ec2.RouteTableRouteArgs{CidrBlock: pulumi.String("0.0.0.0/0"), GatewayId: igw.ID()}},
		Tags:   d.tags("Name", d.n("public")),
	}, d.opts()...)
	if err != nil {
		return err
	}
	public, err := d.subnets(vpc, zones, prefix, "public", 0, publicRT)
	if err != nil {
		return err
	}
	runnerSubnets := public
	if n.NATGateway {
		privateRT, err := d.natRoutes(vpc, igw, public[0])
		if err != nil {
			return err
		}
		half := 1 << (20 - prefix.Bits()) / 2
		if runnerSubnets, err = d.subnets(vpc, zones, prefix, "private", half, privateRT); err != nil {
			return err
		}
	}

	ids := pulumi.StringArray{}
	arns := pulumi.StringArray{}
	for _, s := range runnerSubnets {
		ids = append(ids, s.ID().ToStringOutput())
		arns = append(arns, s.Arn)
	}
	d.net.vpcID = vpc.ID().ToStringOutput()
	d.net.subnetIDs = ids.ToStringArrayOutput()
	d.net.subnetARNs = arns.ToStringArrayOutput()
	return nil
}

// subnet20 returns the i-th /20 of prefix.
func subnet20(prefix netip.Prefix, i int) netip.Prefix {
	a := prefix.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) + uint32(i)<<12
	binary.BigEndian.PutUint32(a[:], v)
	return netip.PrefixFrom(netip.AddrFrom4(a), 20)
}

// zones are the availability zones of a new VPC: the configured ones, or
// the first AZCount available in the region.
func (d *deployment) zones() ([]string, error) {
	n := d.args.Network
	if len(n.AvailabilityZones) > 0 {
		return n.AvailabilityZones, nil
	}
	azs, err := aws.GetAvailabilityZones(d.ctx, &aws.GetAvailabilityZonesArgs{State: pulumi.StringRef("available")}, pulumi.Parent(d.component))
	if err != nil {
		return nil, fmt.Errorf("aws:getAvailabilityZones: %w", err)
	}
	if len(azs.Names) < n.AZCount {
		return nil, &ArgError{Key: "Network.AZCount", Reason: fmt.Sprintf("the region has %d available zones, %d requested", len(azs.Names), n.AZCount)}
	}
	return azs.Names[:n.AZCount], nil
}

// subnets creates one /20 subnet of kind per zone, the first at index
// first of prefix's /20s, each routed by rt.
func (d *deployment) subnets(vpc *ec2.Vpc, zones []string, prefix netip.Prefix, kind string, first int, rt *ec2.RouteTable) ([]*ec2.Subnet, error) {
	var out []*ec2.Subnet
	for i, az := range zones {
		name := d.n(fmt.Sprintf("%s-%s", kind, az))
		s, err := ec2.NewSubnet(d.ctx, name, &ec2.SubnetArgs{
			VpcId:               vpc.ID(),
			CidrBlock:           pulumi.String(subnet20(prefix, first+i).String()),
			AvailabilityZone:    pulumi.String(az),
			MapPublicIpOnLaunch: pulumi.Bool(false), // the launch template decides
			Tags:                d.tags("Name", name, "jitr:tier", kind),
		}, d.opts()...)
		if err != nil {
			return nil, err
		}
		if _, err := ec2.NewRouteTableAssociation(d.ctx, name, &ec2.RouteTableAssociationArgs{
			SubnetId: s.ID(), RouteTableId: rt.ID(),
		}, d.opts()...); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// natRoutes creates the NAT gateway (in public) and the private subnets'
// route table through it.
func (d *deployment) natRoutes(vpc *ec2.Vpc, igw *ec2.InternetGateway, public *ec2.Subnet) (*ec2.RouteTable, error) {
	eip, err := ec2.NewEip(d.ctx, d.n("nat"), &ec2.EipArgs{Domain: pulumi.String("vpc"), Tags: d.tags("Name", d.n("nat"))}, d.opts()...)
	if err != nil {
		return nil, err
	}
	nat, err := ec2.NewNatGateway(d.ctx, d.n("nat"), &ec2.NatGatewayArgs{
		AllocationId: eip.ID(), SubnetId: public.ID(), Tags: d.tags("Name", d.n("nat")),
	}, d.opts(pulumi.DependsOn([]pulumi.Resource{igw}))...)
	if err != nil {
		return nil, err
	}
	return ec2.NewRouteTable(d.ctx, d.n("private"), &ec2.RouteTableArgs{
		VpcId:  vpc.ID(),
		Routes: ec2.RouteTableRouteArray{ec2.RouteTableRouteArgs{CidrBlock: pulumi.String("0.0.0.0/0"), NatGatewayId: nat.ID()}},
		Tags:   d.tags("Name", d.n("private")),
	}, d.opts()...)
}
