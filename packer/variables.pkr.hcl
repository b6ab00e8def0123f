# Variables of the pre-baked runner AMI (jit-runner.pkr.hcl). Every variable
# has a default, so `packer build packer/` works as is.
#
# Pinned downloads: each *_version below comes with the SHA-256 of the file the
# provisioning scripts download for that version, one per architecture
# (*_sha256_x64 is linux x86_64/amd64, *_sha256_arm64 is linux aarch64). The
# defaults are the publishers' own digests (release checksum files, SHASUMS256,
# dl.k8s.io/*.sha256). Changing a version without its digests fails the build
# at the download, by design: look the digests up where the comment says.

variable "region" {
  type        = string
  default     = "us-east-1"
  description = "Region the AMI is built in (and copied from when distributing)."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet of the build instance. Empty: the default VPC, with a public IP so Packer can reach SSH."
}

variable "associate_public_ip_address" {
  type        = bool
  default     = false
  description = "With subnet_id set: give the build instance a public IP (and SSH to it). Without subnet_id a public IP is always used."
}

variable "ssh_interface" {
  type        = string
  default     = ""
  description = "How Packer reaches SSH: public_ip, private_ip, public_dns, private_dns or session_manager. Empty: public_ip when the instance has a public IP, else private_ip."
  validation {
    condition     = contains(["", "public_ip", "private_ip", "public_dns", "private_dns", "session_manager"], var.ssh_interface)
    error_message = "The ssh_interface must be empty or one of public_ip, private_ip, public_dns, private_dns, session_manager."
  }
}

variable "iam_instance_profile" {
  type        = string
  default     = ""
  description = "Instance profile of the build instance; needed only for ssh_interface = session_manager (SSM)."
}

variable "ssh_source_cidrs" {
  type        = list(string)
  default     = []
  description = "CIDRs allowed to reach the build instance's SSH port. Empty: only this machine's public IP when SSH goes over a public address, else 0.0.0.0/0 (Packer's default)."
}

variable "instance_type_x86_64" {
  type        = string
  default     = "t3.large"
  description = "Build instance type for the x86_64 AMI."
}

variable "instance_type_arm64" {
  type        = string
  default     = "t4g.large"
  description = "Build instance type for the arm64 AMI."
}

variable "volume_size" {
  type        = number
  default     = 20
  description = "Root volume size in GiB. It is the smallest volume an instance of this AMI can have, so keep it at or below every launch profile's volumeGiB."
}

variable "encrypt_root_volume" {
  type        = bool
  default     = true
  description = "Encrypt the root volume (and so the AMI's snapshot). Ignored for public AMIs (ami_public): AWS cannot share AMIs with encrypted snapshots publicly; instances launched from them still get encrypted volumes from the launch template."
}

variable "ami_public" {
  type        = bool
  default     = true
  description = "Share the AMI with everyone (ami_groups = [\"all\"]). Set false for test builds."
}

variable "distribute" {
  type        = bool
  default     = true
  description = "Copy the AMI to ami_regions (minus the build region). False: build region only."
}

variable "ami_regions" {
  type = list(string)
  default = [
    "us-east-1", "us-west-1", "us-west-2",
    "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1",
    "sa-east-1",
  ]
  description = "Regions the AMI is copied to when distribute is true; the build region is left out."
}

variable "jit_runners_version" {
  type        = string
  default     = "dev"
  description = "Version of jit-runners this AMI belongs to (a git tag in CI); part of the AMI name and tag jitr:version."
  validation {
    condition     = can(regex("^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$", var.jit_runners_version))
    error_message = "The jit_runners_version must be 1-64 of letters, digits, '.', '_', '+', '-'."
  }
}

variable "build_id" {
  type        = string
  default     = ""
  description = "Optional id of the build (CI run) put into tag jitr:build-id, so leftovers of a failed build can be found."
}

variable "manifest_path" {
  type        = string
  default     = "packer-manifest.json"
  description = "Where the manifest post-processor writes the artifact list (AMI ids per region)."
}

variable "extra_script" {
  type        = string
  default     = ""
  description = "Path (on the machine running Packer) of an extra script to run as root on the build instance after the tools are installed, with the same environment as the other scripts (it may source /tmp/jit-runner/lib.sh). It needs a #! line. Empty: none."
}

# ---- GitHub Actions runner ----

variable "runner_version" {
  type = string
  # The project's one default runner version lives in
  # runtime/config.DefaultRunnerVersion; packer_test.go keeps this equal to it.
  default     = "2.332.0"
  description = "actions/runner release baked into /home/runner/actions-runner and written to the marker /opt/jit-runner-prebaked."
  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.runner_version))
    error_message = "The runner_version must look like 2.332.0."
  }
}

# From the release notes of https://github.com/actions/runner/releases/tag/v<version>.
variable "runner_sha256_x64" {
  type    = string
  default = "f2094522a6b9afeab07ffb586d1eb3f190b6457074282796c497ce7dce9e0f2a"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.runner_sha256_x64))
    error_message = "The runner_sha256_x64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "runner_sha256_arm64" {
  type    = string
  default = "b72f0599cdbd99dd9513ab64fcb59e424fc7359c93b849e8f5efdd5a72f743a6"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.runner_sha256_arm64))
    error_message = "The runner_sha256_arm64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "runner_passwordless_sudo" {
  type        = bool
  default     = true
  description = "Let user runner use sudo without a password, as on GitHub-hosted runners (each instance serves one job; membership of group docker is root-equivalent anyway)."
}

# ---- Languages ----

variable "go_version" {
  type        = string
  default     = "1.23.12"
  description = "Go release installed in /usr/local/go."
}

# From https://go.dev/dl/ (go<version>.linux-{amd64,arm64}.tar.gz).
variable "go_sha256_x64" {
  type    = string
  default = "d3847fef834e9db11bf64e3fb34db9c04db14e068eeb064f49af747010454f90"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.go_sha256_x64))
    error_message = "The go_sha256_x64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "go_sha256_arm64" {
  type    = string
  default = "52ce172f96e21da53b1ae9079808560d49b02ac86cecfa457217597f9bc28ab3"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.go_sha256_arm64))
    error_message = "The go_sha256_arm64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "node_major_version" {
  type        = string
  default     = "22"
  description = "Node.js major version (LTS line); node_version must belong to it."
}

variable "node_version" {
  type        = string
  default     = "22.22.0"
  description = "Node.js release installed in /usr/local (with npm)."
}

# From https://nodejs.org/dist/v<version>/SHASUMS256.txt (node-v<version>-linux-{x64,arm64}.tar.xz).
variable "node_sha256_x64" {
  type    = string
  default = "9aa8e9d2298ab68c600bd6fb86a6c13bce11a4eca1ba9b39d79fa021755d7c37"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.node_sha256_x64))
    error_message = "The node_sha256_x64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "node_sha256_arm64" {
  type    = string
  default = "1bf1eb9ee63ffc4e5d324c0b9b62cf4a289f44332dfef9607cea1a0d9596ba6f"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.node_sha256_arm64))
    error_message = "The node_sha256_arm64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "yamllint_version" {
  type        = string
  default     = "1.37.1"
  description = "yamllint (pip, in its own virtualenv under /opt/yamllint)."
}

# ---- Docker CE (static binaries from download.docker.com) ----

variable "docker_version" {
  type    = string
  default = "29.7.2"
}

# From https://download.docker.com/linux/static/stable/{x86_64,aarch64}/docker-<version>.tgz.
variable "docker_sha256_x64" {
  type    = string
  default = "803d433f226db4776e1768fd319fc6c6e4935a456acf84fcc0080818b854bc8f"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.docker_sha256_x64))
    error_message = "The docker_sha256_x64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "docker_sha256_arm64" {
  type    = string
  default = "43d143448adf2c2787704e7d7704fd6d62d367a54c5edaef0a3f75509cb0938d"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.docker_sha256_arm64))
    error_message = "The docker_sha256_arm64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "docker_compose_version" {
  type        = string
  default     = "2.40.3"
  description = "Docker Compose v2 CLI plugin (`docker compose`)."
}

# From https://github.com/docker/compose/releases/tag/v<version> (docker-compose-linux-{x86_64,aarch64}.sha256).
variable "docker_compose_sha256_x64" {
  type    = string
  default = "dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.docker_compose_sha256_x64))
    error_message = "The docker_compose_sha256_x64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "docker_compose_sha256_arm64" {
  type    = string
  default = "d26373b19e89160546d15407516cc59f453030d9bc5b43ba7faf16f7b4980137"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.docker_compose_sha256_arm64))
    error_message = "The docker_compose_sha256_arm64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "docker_buildx_version" {
  type    = string
  default = "0.36.1"
}

# From https://github.com/docker/buildx/releases/tag/v<version> (checksums.txt, buildx-v<version>.linux-{amd64,arm64}).
variable "docker_buildx_sha256_x64" {
  type    = string
  default = "48af8a397ebd60178778bf63611dbcebe5f5e7a9be90eb9147b24b9587455778"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.docker_buildx_sha256_x64))
    error_message = "The docker_buildx_sha256_x64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "docker_buildx_sha256_arm64" {
  type    = string
  default = "5d0cafd9d16afe1a0f0d9529885344ace2cc99efdd531b6c783c5455a6001569"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.docker_buildx_sha256_arm64))
    error_message = "The docker_buildx_sha256_arm64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

# ---- CLIs ----

variable "kubectl_version" {
  type    = string
  default = "1.35.8"
}

# From https://dl.k8s.io/release/v<version>/bin/linux/{amd64,arm64}/kubectl.sha256.
variable "kubectl_sha256_x64" {
  type    = string
  default = "874d5e72dbb819f43cff16bcd1e4f8bac5b7f2361fe1e55049b0a6c676fb0cbf"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.kubectl_sha256_x64))
    error_message = "The kubectl_sha256_x64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "kubectl_sha256_arm64" {
  type    = string
  default = "cc749967b62f4422260bc9c0aa7a7c55f45175ae38cb8d95767b5d2b7e04c1fd"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.kubectl_sha256_arm64))
    error_message = "The kubectl_sha256_arm64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "helm_version" {
  type        = string
  default     = "3.18.4"
  description = "Helm 3 release."
  validation {
    condition     = can(regex("^3\\.[0-9]+\\.[0-9]+$", var.helm_version))
    error_message = "The helm_version must be a Helm 3 release such as 3.18.4."
  }
}

# From https://get.helm.sh/helm-v<version>-linux-{amd64,arm64}.tar.gz.sha256sum.
variable "helm_sha256_x64" {
  type    = string
  default = "f8180838c23d7c7d797b208861fecb591d9ce1690d8704ed1e4cb8e2add966c1"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.helm_sha256_x64))
    error_message = "The helm_sha256_x64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "helm_sha256_arm64" {
  type    = string
  default = "c0a45e67eef0c7416a8a8c9e9d5d2d30d70e4f4d3f7bea5de28241fffa8f3b89"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.helm_sha256_arm64))
    error_message = "The helm_sha256_arm64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "gh_version" {
  type    = string
  default = "2.79.0"
}

# From https://github.com/cli/cli/releases/download/v<version>/gh_<version>_checksums.txt.
variable "gh_sha256_x64" {
  type    = string
  default = "e7af0c72a607c0528fda1989f7c8e3be85e67d321889002af0e2938ad9c8fb68"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.gh_sha256_x64))
    error_message = "The gh_sha256_x64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "gh_sha256_arm64" {
  type    = string
  default = "1b91e546b30181a8ee6d8c72bbf59eaadbb0600bab014dfbcc199676c83ea102"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.gh_sha256_arm64))
    error_message = "The gh_sha256_arm64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "yq_version" {
  type    = string
  default = "4.42.1"
}

# From https://github.com/mikefarah/yq/releases/tag/v<version> (checksums, yq_linux_{amd64,arm64}).
variable "yq_sha256_x64" {
  type    = string
  default = "1a95960dddd426321354d58d2beac457717f7c49a9ec0806749a5a9e400eb45e"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.yq_sha256_x64))
    error_message = "The yq_sha256_x64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "yq_sha256_arm64" {
  type    = string
  default = "16a57531a594b66c3e0981cd93f9e9cd4b684a347b86eaf5e3f409074ad67eb8"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.yq_sha256_arm64))
    error_message = "The yq_sha256_arm64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "git_lfs_version" {
  type    = string
  default = "3.7.1"
}

# From https://github.com/git-lfs/git-lfs/releases/download/v<version>/sha256sums.asc.
variable "git_lfs_sha256_x64" {
  type    = string
  default = "1c0b6ee5200ca708c5cebebb18fdeb0e1c98f1af5c1a9cba205a4c0ab5a5ec08"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.git_lfs_sha256_x64))
    error_message = "The git_lfs_sha256_x64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}

variable "git_lfs_sha256_arm64" {
  type    = string
  default = "73a9c90eeb4312133a63c3eaee0c38c019ea7bfa0953d174809d25b18588dd8d"
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.git_lfs_sha256_arm64))
    error_message = "The git_lfs_sha256_arm64 must be a SHA-256 digest: 64 lowercase hex digits."
  }
}
