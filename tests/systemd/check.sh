#!/usr/bin/env bash
# Checks the shipped systemd files offline: the unit verifies, its exposure is
# at most 1.5, sysusers creates the predictd user and group, tmpfiles makes
# the database directory group-writable with the setgid bit.
set -euo pipefail
src=$1 predictd=$2 build=$(dirname "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# verify checks that ExecStart exists: point it at the binary just built.
sed "s#/usr/bin/predictd#$predictd#" "$src/systemd/predictd.service" >"$work/predictd.service"
systemd-analyze verify "$work/predictd.service"

# --threshold is in tenths: 15 = exposure 1.5; a higher exposure exits 1.
systemd-analyze security --offline=true --threshold=15 "$src/systemd/predictd.service" >"$work/security.txt" || {
  cat "$work/security.txt"; echo "exposure above 1.5"; exit 1; }
tail -n 1 "$work/security.txt"

mkdir -p "$work/root/etc"
systemd-sysusers --root="$work/root" "$src/systemd/predictd.sysusers" 2>/dev/null
grep -q '^predictd:x:[0-9]*:[0-9]*:.*:/usr/sbin/nologin$' "$work/root/etc/passwd" || { echo "sysusers made no predictd user"; exit 1; }
grep -q '^predictd:x:' "$work/root/etc/group" || { echo "sysusers made no predictd group"; exit 1; }

systemd-tmpfiles --root="$work/root" --create "$src/systemd/predictd.tmpfiles"
mode=$(stat -c %a "$work/root/var/lib/predictd")
[ "$mode" = 2770 ] || { echo "/var/lib/predictd has mode $mode, want 2770"; exit 1; }
# systemd chmods the state directory at each start: a unit mode without the
# setgid bit would undo the tmpfiles mode, so the two must agree.
unit_mode=$(sed -n 's/^StateDirectoryMode=//p' "$src/systemd/predictd.service")
tmpfiles_mode=$(awk '$1 == "d" && $2 == "/var/lib/predictd" { print $3 }' "$src/systemd/predictd.tmpfiles")
[ -n "$unit_mode" ] && [ "$unit_mode" = "$tmpfiles_mode" ] || {
  echo "StateDirectoryMode=$unit_mode in predictd.service, $tmpfiles_mode in predictd.tmpfiles: they must agree"; exit 1; }
# cmake --install lays everything out in FHS paths.
DESTDIR="$work/dest" cmake --install "$build" --prefix /usr >/dev/null
for f in usr/bin/predictd usr/bin/predictctl usr/bin/predictd-sim usr/lib/systemd/system/predictd.service \
         usr/lib/sysusers.d/predictd.conf usr/lib/tmpfiles.d/predictd.conf etc/predictd/predictd.json \
         usr/share/predictd/schema/001_init.sql usr/share/doc/predictd/README.md; do
  [ -e "$work/dest/$f" ] || { echo "cmake --install did not lay out /$f"; exit 1; }
done
echo "systemd files ok"
