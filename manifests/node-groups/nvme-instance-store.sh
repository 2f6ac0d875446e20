#!/usr/bin/env bash
# Formats and mounts the NVMe instance store of a query node at /mnt/nvme for the segment-cache sidecar.
# Embedded verbatim in manifests/node-groups/eksctl-cluster.yaml (preBootstrapCommands of the querynodes-*
# groups; tests/e2e/test_node_groups_manifests.py checks the copy equals this file, runs `bash -n`, shellcheck,
# and runs it twice against stub tools to show it is idempotent).
#
# cloud-init runs preBootstrapCommands once per instance, so this script does not mount on every boot itself:
# it writes a systemd mount unit (nofail, ordered before kubelet) that mounts the filesystem on every boot.
# The instance store keeps its data across a reboot, not across stop/terminate (a new instance gets blank
# disks and formats them here again; the cache then re-warms from S3).
#   - mkfs only when the device carries no filesystem (a reboot or a re-run never wipes the cache);
#   - several instance-store disks are striped into one RAID 0 (/dev/md/nvme), assembled again if it exists;
#   - the mount unit names the filesystem by UUID (NVMe device names are not stable across boots);
#   - /mnt/nvme/segment-cache belongs to UID/GID 65532, the sidecar's user.
set -euo pipefail

MOUNT_POINT="${NVME_MOUNT_POINT:-/mnt/nvme}"
CACHE_DIR="${MOUNT_POINT}/segment-cache"
CACHE_UID=65532
# Overridable for the test only (stub root); "" on a node.
ROOT="${NVME_TEST_ROOT:-}"
UNIT_DIR="${ROOT}/etc/systemd/system"

# The EC2 instance-store NVMe devices (model "Amazon EC2 NVMe Instance Storage"); EBS volumes report
# "Amazon Elastic Block Store" and are left alone.
mapfile -t devices < <(lsblk -dpno NAME,MODEL | awk '/Instance Storage/ {print $1}')
if [ "${#devices[@]}" -eq 0 ]; then
  echo "nvme-instance-store: no instance-store NVMe device on this instance" >&2
  exit 1
fi

if [ "${#devices[@]}" -eq 1 ]; then
  dev="${devices[0]}"
else
  dev=/dev/md/nvme
  if [ ! -e "$dev" ]; then
    # Assemble an array a previous run built; create it only if there is none.
    mdadm --assemble "$dev" "${devices[@]}" 2>/dev/null ||
      mdadm --create "$dev" --run --level=0 --raid-devices="${#devices[@]}" "${devices[@]}"
  fi
fi

fstype="$(blkid -o value -s TYPE "$dev" || true)"
if [ -z "$fstype" ]; then
  mkfs.xfs -q -L segment-cache "$dev"
fi
uuid="$(blkid -o value -s UUID "$dev")"

# Unit name = systemd-escape of the mount point (/mnt/nvme -> mnt-nvme.mount).
unit="$(systemd-escape --path --suffix=mount "$MOUNT_POINT")"
mkdir -p "$UNIT_DIR" "${ROOT}${MOUNT_POINT}"
cat > "${UNIT_DIR}/${unit}" <<UNIT
[Unit]
Description=NVMe instance store for the segment-cache sidecar
Before=kubelet.service
[Mount]
What=/dev/disk/by-uuid/${uuid}
Where=${MOUNT_POINT}
Type=xfs
Options=defaults,noatime,nofail
[Install]
WantedBy=local-fs.target kubelet.service
UNIT
systemctl daemon-reload
systemctl enable --now "$unit"

mkdir -p "${ROOT}${CACHE_DIR}"
chown "${CACHE_UID}:${CACHE_UID}" "${ROOT}${CACHE_DIR}"
chmod 0750 "${ROOT}${CACHE_DIR}"
