#!/bin/bash
# tests/bench/run-audit-growth.sh - does `ferry audit`'s peak memory grow with the identities of
# an estate when the findings do not? An AWS estate of ACCOUNTS accounts x ROLES roles that
# give no finding (no policies, trusted by ec2 only: one info note per account), audited over
# growing prefixes of its files; peak RSS should stop growing once the constant parts (caches,
# malloc's arenas) are full, whatever the number of roles.
#
# usage: tests/bench/run-audit-growth.sh -B BUILDDIR [-a ACCOUNTS] [-r ROLES] [-o DIR]
#   -B  build directory holding ferry (built: `make ferry`)
#   -a  accounts (default 1000)
#   -r  roles per account (default 500)
#   -o  estate directory (default /tmp/audit-growth-estate); regenerated unless it holds
#       exactly this estate
# Prints one line per prefix (files, roles, findings, wall s, peak RSS MiB). Exit 2 on setup
# errors; a benchmark, not a test.
set -u
set -o pipefail

builddir=
accounts=1000
roles=500
estate=/tmp/audit-growth-estate
while getopts B:a:r:o:h o; do
    case $o in
    B) builddir=$OPTARG ;;
    a) accounts=$OPTARG ;;
    r) roles=$OPTARG ;;
    o) estate=$OPTARG ;;
    h) sed -n '2,15s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) exit 2 ;;
    esac
done
die() { echo "run-audit-growth: $*" >&2; exit 2; }
[ -n "$builddir" ] || die "-B BUILDDIR is required"
ferry=$builddir/ferry
[ -x "$ferry" ] || die "no $ferry (make ferry)"
[ -x /usr/bin/time ] || die "GNU time is needed (apt-get install time)"
command -v python3 >/dev/null || die "python3 is needed"
case "$accounts$roles" in *[!0-9]*) die "-a and -r take numbers" ;; esac

stamp="$accounts x $roles"
if [ "$(cat "$estate/estate.txt" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$estate" && mkdir -p "$estate/aws" || die "cannot make $estate"
    python3 - "$estate/aws" "$accounts" "$roles" <<'PY' || die "generating the estate failed"
import json, sys
out, n_acct, n_roles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {
    "Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
for a in range(n_acct):
    acct = "%012d" % (200000000000 + a)
    doc = {"RoleDetailList": [{
        "RoleName": "app-%d" % i, "Path": "/", "Arn": "arn:aws:iam::%s:role/app-%d" % (acct, i),
        "RoleId": "AROA%016d" % i, "CreateDate": "2020-01-01T00:00:00Z",
        "AssumeRolePolicyDocument": trust, "InstanceProfileList": [], "RolePolicyList": [],
        "AttachedManagedPolicies": [], "Tags": []} for i in range(n_roles)],
        "UserDetailList": [], "GroupDetailList": [], "Policies": []}
    with open("%s/%s-authz.json" % (out, acct), "w") as f:
        json.dump(doc, f)
PY
    echo "$stamp" > "$estate/estate.txt"
fi

mapfile -t files < <(find "$estate/aws" -name '*.json' | LC_ALL=C sort)
[ "${#files[@]}" -eq "$accounts" ] || die "$estate/aws holds ${#files[@]} files, not $accounts"
cat "${files[@]}" > /dev/null # page cache
echo "| files | roles | findings | wall s | peak RSS MiB |"
echo "|---:|---:|---:|---:|---:|"
for pct in 1 10 25 50 75 100; do
    n=$(( accounts * pct / 100 ))
    [ "$n" -ge 1 ] || n=1
    out=$(/usr/bin/time -f '%e %M' -o /tmp/run-audit-growth.$$ "$ferry" audit --now 1795000000 \
        --output-format json --fail-on none "${files[@]:0:$n}" |
        grep -o '"total": [0-9]*' | tail -1 | grep -o '[0-9]*$') || die "ferry audit failed"
    read -r wall kb < /tmp/run-audit-growth.$$
    printf '| %d | %d | %s | %s | %.1f |\n' "$n" $(( n * roles )) "$out" "$wall" \
        "$(awk -v k="$kb" 'BEGIN { print k / 1024 }')"
done
rm -f /tmp/run-audit-growth.$$
