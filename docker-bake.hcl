# docker buildx bake            -> docker-bastion:latest and :alpine3.21, amd64 + arm64
# IMAGE=registry.example/bastion REVISION=$(git rev-parse HEAD) docker buildx bake --push

variable "IMAGE" {
  default = "docker-bastion"
}

variable "ALPINE_VERSION" {
  default = "3.21"
}

variable "VERSION" {
  default = "0.1.0"
}

variable "REVISION" {
  default = "unknown"
}

variable "CREATED" {
  default = "${timestamp()}"
}

group "default" {
  targets = ["bastion"]
}

target "bastion" {
  context    = "."
  dockerfile = "Dockerfile"
  args = {
    ALPINE_VERSION = "${ALPINE_VERSION}"
    SSH_UID        = "1000"
    SSH_GID        = "1000"
    VERSION        = "${VERSION}"
    REVISION       = "${REVISION}"
    CREATED        = "${CREATED}"
  }
  tags = [
    "${IMAGE}:latest",
    "${IMAGE}:alpine${ALPINE_VERSION}",
  ]
  platforms = ["linux/amd64", "linux/arm64"]
}
