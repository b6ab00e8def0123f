# The pre-baked jit-runners AMI: Amazon Linux 2023 (newest, x86_64 and arm64)
# with the GitHub Actions runner in /home/runner/actions-runner, user runner,
# Docker CE and the usual CI tools. The instance bootstrap
# (runtime/bootstrap/bootstrap.sh) skips every install when the marker
# /opt/jit-runner-prebaked holds its configured runner version.
#
#   make ami.validate                 offline: fmt check + full validate
#   make ami.build-test               private AMI, build region only
#   make ami.build                    public AMI, copied to ami_regions
#
# Variables and their defaults: variables.pkr.hcl. Provisioning: scripts/.

packer {
  required_version = ">= 1.10.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.8.0"
    }
  }
}

locals {
  # One timestamp for the whole run, so both architectures share it.
  timestamp = formatdate("YYYYMMDD-hhmmss", timestamp())
  ami_name  = "jit-runner-${var.jit_runners_version}-runner${var.runner_version}-${local.timestamp}"

  # Without a subnet the instance goes to the default VPC and always gets a
  # public IP: that is the only way Packer reaches its SSH port there.
  public_ip     = var.subnet_id == "" ? true : var.associate_public_ip_address
  ssh_interface = var.ssh_interface != "" ? var.ssh_interface : (local.public_ip ? "public_ip" : "private_ip")
  # Open SSH to this machine's public IP only, unless CIDRs are given or SSH
  # goes over a private address (then Packer's default 0.0.0.0/0 applies to
  # the temporary security group, inside the VPC).
  ssh_from_here_only = length(var.ssh_source_cidrs) == 0 && contains(["public_ip", "public_dns"], local.ssh_interface)

  copy_regions = [for r in var.ami_regions : r if r != var.region]
  # AWS cannot make an AMI public when its snapshots are encrypted.
  encrypted = var.encrypt_root_volume && !var.ami_public

  tags = merge({
    "jitr:runner-version" = var.runner_version
    "jitr:version"        = var.jit_runners_version
    "jitr:managed-by"     = "jit-runners"
  }, var.build_id == "" ? {} : { "jitr:build-id" = var.build_id })
  # jitr:arch uses the runner's architecture names, as config.Profile.Arch
  # does. The plugin fills in {{ .SourceAMIName }} (the Amazon Linux AMI).
  arch_tags = {
    x86_64 = merge(local.tags, { Name = "${local.ami_name}-x86_64", "jitr:arch" = "x64", "jitr:source-ami" = "{{ .SourceAMIName }}" })
    arm64  = merge(local.tags, { Name = "${local.ami_name}-arm64", "jitr:arch" = "arm64", "jitr:source-ami" = "{{ .SourceAMIName }}" })
  }

  # Every provisioning script gets the same environment; each picks its
  # architecture's digest by uname -m.
  provision_env = [
    "RUNNER_VERSION=${var.runner_version}",
    "RUNNER_SHA256_X64=${var.runner_sha256_x64}",
    "RUNNER_SHA256_ARM64=${var.runner_sha256_arm64}",
    "RUNNER_PASSWORDLESS_SUDO=${var.runner_passwordless_sudo}",
    "GO_VERSION=${var.go_version}",
    "GO_SHA256_X64=${var.go_sha256_x64}",
    "GO_SHA256_ARM64=${var.go_sha256_arm64}",
    "NODE_MAJOR_VERSION=${var.node_major_version}",
    "NODE_VERSION=${var.node_version}",
    "NODE_SHA256_X64=${var.node_sha256_x64}",
    "NODE_SHA256_ARM64=${var.node_sha256_arm64}",
    "YAMLLINT_VERSION=${var.yamllint_version}",
    "DOCKER_VERSION=${var.docker_version}",
    "DOCKER_SHA256_X64=${var.docker_sha256_x64}",
    "DOCKER_SHA256_ARM64=${var.docker_sha256_arm64}",
    "DOCKER_COMPOSE_VERSION=${var.docker_compose_version}",
    "DOCKER_COMPOSE_SHA256_X64=${var.docker_compose_sha256_x64}",
    "DOCKER_COMPOSE_SHA256_ARM64=${var.docker_compose_sha256_arm64}",
    "DOCKER_BUILDX_VERSION=${var.docker_buildx_version}",
    "DOCKER_BUILDX_SHA256_X64=${var.docker_buildx_sha256_x64}",
    "DOCKER_BUILDX_SHA256_ARM64=${var.docker_buildx_sha256_arm64}",
    "KUBECTL_VERSION=${var.kubectl_version}",
    "KUBECTL_SHA256_X64=${var.kubectl_sha256_x64}",
    "KUBECTL_SHA256_ARM64=${var.kubectl_sha256_arm64}",
    "HELM_VERSION=${var.helm_version}",
    "HELM_SHA256_X64=${var.helm_sha256_x64}",
    "HELM_SHA256_ARM64=${var.helm_sha256_arm64}",
    "GH_VERSION=${var.gh_version}",
    "GH_SHA256_X64=${var.gh_sha256_x64}",
    "GH_SHA256_ARM64=${var.gh_sha256_arm64}",
    "YQ_VERSION=${var.yq_version}",
    "YQ_SHA256_X64=${var.yq_sha256_x64}",
    "YQ_SHA256_ARM64=${var.yq_sha256_arm64}",
    "GIT_LFS_VERSION=${var.git_lfs_version}",
    "GIT_LFS_SHA256_X64=${var.git_lfs_sha256_x64}",
    "GIT_LFS_SHA256_ARM64=${var.git_lfs_sha256_arm64}",
  ]
  # Scripts run as root; env passes the variables through sudo.
  execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
}

source "amazon-ebs" "runner" {
  region        = var.region
  subnet_id     = var.subnet_id
  ssh_username  = "ec2-user"
  ssh_interface = local.ssh_interface
  ssh_timeout   = "10m"
  # Needed only for ssh_interface = "session_manager".
  iam_instance_profile = var.iam_instance_profile

  associate_public_ip_address               = local.public_ip
  temporary_security_group_source_public_ip = local.ssh_from_here_only
  temporary_security_group_source_cidrs     = var.ssh_source_cidrs

  # The build instance itself: IMDSv2 only, no hop for containers.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = var.volume_size
    volume_type           = "gp3"
    encrypted             = local.encrypted
    delete_on_termination = true
  }

  ami_description = "jit-runners ${var.jit_runners_version}: Amazon Linux 2023 with GitHub Actions runner ${var.runner_version} pre-installed"
  # Instances launched from the AMI default to IMDSv2 only.
  imds_support  = "v2.0"
  ena_support   = true
  sriov_support = true
  # Public sharing also needs the account's "block public access for AMIs"
  # setting turned off in each region.
  ami_groups  = var.ami_public ? ["all"] : []
  ami_regions = var.distribute ? local.copy_regions : []

  run_tags        = merge(local.tags, { Name = "packer ${local.ami_name}" })
  run_volume_tags = local.tags

  # Copying to nine regions can take a while.
  aws_polling {
    delay_seconds = 30
    max_attempts  = 240
  }
}

build {
  name = "jit-runner"

  source "amazon-ebs.runner" {
    name          = "x86_64"
    instance_type = var.instance_type_x86_64
    ami_name      = "${local.ami_name}-x86_64"
    tags          = local.arch_tags.x86_64
    snapshot_tags = local.arch_tags.x86_64
    source_ami_filter {
      filters = {
        name                  = "al2023-ami-2023.*-kernel-*-x86_64"
        architecture          = "x86_64"
        "root-device-type"    = "ebs"
        "virtualization-type" = "hvm"
      }
      owners      = ["amazon"]
      most_recent = true
    }
  }

  source "amazon-ebs.runner" {
    name          = "arm64"
    instance_type = var.instance_type_arm64
    ami_name      = "${local.ami_name}-arm64"
    tags          = local.arch_tags.arm64
    snapshot_tags = local.arch_tags.arm64
    source_ami_filter {
      filters = {
        name                  = "al2023-ami-2023.*-kernel-*-arm64"
        architecture          = "arm64"
        "root-device-type"    = "ebs"
        "virtualization-type" = "hvm"
      }
      owners      = ["amazon"]
      most_recent = true
    }
  }

  # lib.sh is sourced by every script below.
  provisioner "shell" {
    inline = ["mkdir -p /tmp/jit-runner"]
  }

  provisioner "file" {
    source      = "${path.root}/scripts/lib.sh"
    destination = "/tmp/jit-runner/lib.sh"
  }

  provisioner "shell" {
    environment_vars = local.provision_env
    execute_command  = local.execute_command
    scripts = [
      "${path.root}/scripts/10-base.sh",
      "${path.root}/scripts/20-docker.sh",
      "${path.root}/scripts/30-languages.sh",
      "${path.root}/scripts/40-cli.sh",
      "${path.root}/scripts/50-runner.sh",
    ]
  }

  # The optional extra script: uploaded, run as root, then removed by Packer.
  provisioner "shell" {
    environment_vars = local.provision_env
    execute_command  = local.execute_command
    script           = var.extra_script != "" ? var.extra_script : "${path.root}/scripts/60-no-extra.sh"
  }

  provisioner "shell" {
    environment_vars = local.provision_env
    execute_command  = local.execute_command
    scripts = [
      "${path.root}/scripts/90-verify.sh",
      "${path.root}/scripts/99-cleanup.sh",
    ]
  }

  post-processor "manifest" {
    output     = var.manifest_path
    strip_path = true
    custom_data = {
      runner_version      = var.runner_version
      jit_runners_version = var.jit_runners_version
      architecture        = source.name
      ami_public          = var.ami_public ? "true" : "false"
      distributed         = var.distribute ? "true" : "false"
    }
  }
}
