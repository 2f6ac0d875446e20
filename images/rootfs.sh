#!/usr/bin/env bash
# Lays out the root filesystem of a distroless-style image for one of our binaries, in CONTEXT/rootfs/:
#   usr/local/bin/NAME                the binary (glibc-dynamic, as cargo builds it)
#   the loader and every library `ldd` names, at the paths the binary asks for
#   etc/ssl/certs/ca-certificates.crt the build machine's CA bundle (HTTPS to AWS)
#   etc/passwd, etc/group             root and nonroot (65532:65532), nothing else
#   etc/nsswitch.conf                 hosts: files dns (glibc's built-in default asks DNS before /etc/hosts)
#   etc/hosts                         localhost only: the runtime mounts its own over it (the kubelet
#                                     does for every pod), this one serves where none does
#   home/nonroot                      HOME of 65532 (empty; the root filesystem may be read-only)
# /etc/resolv.conf is the runtime's.
# Usage: images/rootfs.sh BINARY CONTEXT
set -euo pipefail
bin=$1 ctx=$2
name=$(basename "$bin")
[ -x "$bin" ] || { echo "rootfs.sh: $bin is not an executable (build it first)" >&2; exit 1; }
rm -rf "$ctx/rootfs"
root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/home/nonroot"
install -m 0755 "$bin" "$root/usr/local/bin/$name"

# Libraries and loader: every absolute path ldd prints, copied as a regular file at that path
# (symlinks resolved), so the loader finds them exactly where the binary's DT_NEEDED/PT_INTERP say.
interp=$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[ -n "$interp" ] || { echo "rootfs.sh: $bin has no program interpreter (static?): nothing to copy" >&2; }
mapfile -t libs < <(ldd "$bin" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i}' | sort -u)
for lib in $interp "${libs[@]}"; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "rootfs.sh: $ca missing: apt-get install ca-certificates" >&2; exit 1; }
install -m 0644 "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/hosts" "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
chown 65532:65532 "$root/home/nonroot"
chmod 0755 "$root/home/nonroot"
