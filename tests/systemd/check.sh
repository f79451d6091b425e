#!/usr/bin/env bash
# Checks the shipped systemd files offline: the unit verifies, its exposure is
# at most 1.5, sysusers creates the predictd user and group, tmpfiles makes
# the database directory group-writable with the setgid bit, and the unit's
# StateDirectoryMode= keeps that mode; cmake --install lays them out, with
# ExecStart= under the install prefix and an existing /etc config kept.
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
         usr/share/predictd/schema/001_init.sql usr/share/doc/predictd/README.md \
         usr/share/doc/predictd/predictd.json.example; do
  [ -e "$work/dest/$f" ] || { echo "cmake --install did not lay out /$f"; exit 1; }
done
# With --prefix /usr the installed unit is the source unit, the one verified above.
cmp "$src/systemd/predictd.service" "$work/dest/usr/lib/systemd/system/predictd.service" ||
  { echo "the unit installed with --prefix /usr differs from systemd/predictd.service"; exit 1; }

# An operator's edited config survives the next install.
echo '{"db": {"path": "/srv/jobs.db"}}' >"$work/dest/etc/predictd/predictd.json"
DESTDIR="$work/dest" cmake --install "$build" --prefix /usr >"$work/reinstall.txt"
[ "$(cat "$work/dest/etc/predictd/predictd.json")" = '{"db": {"path": "/srv/jobs.db"}}' ] ||
  { echo "cmake --install overwrote /etc/predictd/predictd.json"; exit 1; }
grep -q "Keeping: $work/dest/etc/predictd/predictd.json" "$work/reinstall.txt" ||
  { cat "$work/reinstall.txt"; echo "cmake --install did not say it kept /etc/predictd/predictd.json"; exit 1; }

# Under another prefix (CMake's default, /usr/local) the unit starts the binary installed there.
DESTDIR="$work/local" cmake --install "$build" --prefix /usr/local >/dev/null
unit="$work/local/usr/local/lib/systemd/system/predictd.service"
[ -x "$work/local/usr/local/bin/predictd" ] || { echo "no /usr/local/bin/predictd"; exit 1; }
diff <(sed -e 's#^ExecStart=/usr/bin/predictd #ExecStart=/usr/local/bin/predictd #' \
           -e 's#^Documentation=file:///usr/share/doc/#Documentation=file:///usr/local/share/doc/#' \
           "$src/systemd/predictd.service") "$unit" ||
  { echo "the unit installed with --prefix /usr/local does not point at /usr/local"; exit 1; }
[ -e "$work/local/usr/local/share/doc/predictd/README.md" ] || { echo "no /usr/local/share/doc/predictd/README.md"; exit 1; }
echo "systemd files ok"
