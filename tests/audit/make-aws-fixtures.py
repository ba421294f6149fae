#!/usr/bin/env python3
# Writes tests/audit/aws/: one positive and one negative input per AWS rule, and expected.json
# naming what each positive input must produce (rule, resource, severity). The files are
# committed; rerun this after changing a case: python3 tests/audit/make-aws-fixtures.py
#
# Every dated case is relative to NOW below (2026-09-21T14:13:20Z), which the tests pass as
# --now; --known-accounts known-accounts.txt is passed for every case.
import json
import os

NOW = 1790000000
ACCT = "111122223333"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "aws")


def arn(kind, name, path="/"):
    return f"arn:aws:iam::{ACCT}:{kind}{path}{name}"


def doc(*stmts):
    return {"Version": "2012-10-17", "Statement": list(stmts)}


def allow(action, resource="*", **kw):
    s = {"Effect": "Allow", "Action": action, "Resource": resource}
    s.update(kw)
    return s


def trust(principal, action="sts:AssumeRole", condition=None):
    s = {"Effect": "Allow", "Principal": principal, "Action": action}
    if condition:
        s["Condition"] = condition
    return doc(s)


EC2_TRUST = trust({"Service": "ec2.amazonaws.com"})


def role(name, inline=None, attached=(), trust_doc=EC2_TRUST, last_used="2026-09-20T00:00:00Z",
         created="2020-01-01T00:00:00Z", path="/"):
    r = {"Path": path, "RoleName": name, "RoleId": "AROA" + name.upper()[:16],
         "Arn": arn("role", name, path), "CreateDate": created,
         "AssumeRolePolicyDocument": trust_doc, "InstanceProfileList": [],
         "RolePolicyList": [{"PolicyName": n, "PolicyDocument": d}
                            for n, d in (inline or {}).items()],
         "AttachedManagedPolicies": [{"PolicyName": a.rsplit("/", 1)[1], "PolicyArn": a}
                                     for a in attached],
         "Tags": []}
    if last_used is not None:
        r["RoleLastUsed"] = {"LastUsedDate": last_used, "Region": "us-east-1"} \
            if last_used else {}
    return r


def user(name, inline=None):
    return {"Path": "/", "UserName": name, "UserId": "AIDA" + name.upper()[:16],
            "Arn": arn("user", name), "CreateDate": "2020-01-01T00:00:00Z",
            "UserPolicyList": [{"PolicyName": n, "PolicyDocument": d}
                               for n, d in (inline or {}).items()],
            "GroupList": [], "AttachedManagedPolicies": [], "Tags": []}


def group(name, inline=None):
    return {"Path": "/", "GroupName": name, "GroupId": "AGPA" + name.upper()[:16],
            "Arn": arn("group", name), "CreateDate": "2020-01-01T00:00:00Z",
            "GroupPolicyList": [{"PolicyName": n, "PolicyDocument": d}
                                for n, d in (inline or {}).items()],
            "AttachedManagedPolicies": []}


def policy(name, versions, attachments, default="v1", aws_managed=False):
    a = f"arn:aws:iam::aws:policy/{name}" if aws_managed else arn("policy", name)
    return {"PolicyName": name, "PolicyId": "ANPA" + name.upper()[:16], "Arn": a, "Path": "/",
            "DefaultVersionId": default, "AttachmentCount": attachments,
            "PermissionsBoundaryUsageCount": 0, "IsAttachable": True,
            "CreateDate": "2020-01-01T00:00:00Z", "UpdateDate": "2020-01-01T00:00:00Z",
            "PolicyVersionList": [{"Document": d, "VersionId": v, "IsDefaultVersion": v == default,
                                   "CreateDate": "2020-01-01T00:00:00Z"}
                                  for v, d in versions.items()]}


def authz(users=(), groups=(), roles=(), policies=()):
    return {"UserDetailList": list(users), "GroupDetailList": list(groups),
            "RoleDetailList": list(roles), "Policies": list(policies)}


ADMIN = allow("*")
GH = f"arn:aws:iam::{ACCT}:oidc-provider/token.actions.githubusercontent.com"
EKS_HOST = "oidc.eks.us-east-1.amazonaws.com/id/ABCDEF0123456789"
EKS = f"arn:aws:iam::{ACCT}:oidc-provider/{EKS_HOST}"
SLR = dict(path="/aws-service-role/codebuild.amazonaws.com/")

# rule -> (positive input, [(resource, severity)], negative input)
CASES = {
    "AWS-OP-001": (
        authz(users=[user("admin-inline", {"all": doc(ADMIN)}),
                     user("star-colon-star", {"all": doc(allow(["s3:ListBucket", "*:*"]))})],
              roles=[role("notaction-nothing", {"p": doc({"Effect": "Allow", "NotAction": [],
                                                          "Resource": "*"})})]),
        [(arn("user", "admin-inline"), "critical"), (arn("role", "notaction-nothing"), "critical"),
         (arn("user", "star-colon-star"), "critical")],
        authz(users=[user("scoped", {"p": doc(allow("*", "arn:aws:s3:::bucket/*"),
                                              {"Effect": "Deny", "Action": "*",
                                               "Resource": "*"})})]),
    ),
    "AWS-OP-002": (
        authz(users=[user("self-policy", {"p": doc(allow("iam:PutUserPolicy",
                                                         arn("user", "self-policy")))})],
              roles=[role("ci-escalate", {"p": doc(allow("iam:AttachRolePolicy",
                                                         arn("role", "ci-escalate")))}),
                     role("cmp-writer", {"p": doc(allow("iam:CreatePolicyVersion",
                                                        arn("policy", "writable")))},
                          attached=[arn("policy", "writable")],
                          trust_doc=trust({"AWS": f"arn:aws:iam::{ACCT}:root"}))],
              policies=[policy("writable", {"v1": doc(allow("s3:ListBucket",
                                                            "arn:aws:s3:::logs"))}, 1)]),
        [(arn("user", "self-policy"), "high"), (arn("role", "ci-escalate"), "critical"),
         (arn("role", "cmp-writer"), "high")],
        authz(users=[user("others-only", {"p": doc(allow("iam:PutUserPolicy",
                                                         arn("user", "someone-else")))}),
                     user("conditioned", {"p": doc(allow(
                         "iam:PutUserPolicy", arn("user", "conditioned"),
                         Condition={"Bool": {"aws:MultiFactorAuthPresent": "true"}}))})],
              roles=[role("denied", {"p": doc(allow("iam:AttachRolePolicy", "*"),
                                              {"Effect": "Deny", "Action": "iam:Attach*",
                                               "Resource": arn("role", "denied")})})]),
    ),
    "AWS-OP-006": (
        # dev -> deployer (assumes it: the trust names the account, dev's policy the role)
        # -> admin-box (deployer passes it to EC2); intern -> jump (the trust names intern).
        authz(users=[user("dev", {"p": doc(allow("sts:AssumeRole", arn("role", "deployer")))}),
                     user("intern")],
              roles=[role("deployer", {"p": doc(allow("iam:PassRole", arn("role", "admin-box")),
                                                allow("ec2:RunInstances"))},
                          trust_doc=trust({"AWS": f"arn:aws:iam::{ACCT}:root"})),
                     role("admin-box", {"all": doc(ADMIN)}),
                     role("jump", {"all": doc(ADMIN)},
                          trust_doc=trust({"AWS": arn("user", "intern")}))]),
        [(arn("user", "dev"), "high"), (arn("role", "deployer"), "high"),
         (arn("user", "intern"), "high")],
        # The same shapes with each path broken: an MFA condition on the trust, a policy
        # naming another role, PassRole without a way to start EC2.
        authz(users=[user("dev", {"p": doc(allow("sts:AssumeRole", arn("role", "mfa-admin")),
                                           allow("sts:AssumeRole", arn("role", "reader")))})],
              roles=[role("mfa-admin", {"all": doc(ADMIN)},
                          trust_doc=trust({"AWS": f"arn:aws:iam::{ACCT}:root"}, condition={
                              "Bool": {"aws:MultiFactorAuthPresent": "true"}})),
                     role("reader", {"p": doc(allow("s3:GetObject", "arn:aws:s3:::b/*"))},
                          trust_doc=trust({"AWS": f"arn:aws:iam::{ACCT}:root"})),
                     role("other-admin", {"all": doc(ADMIN)},
                          trust_doc=trust({"AWS": f"arn:aws:iam::{ACCT}:root"})),
                     role("passer", {"p": doc(allow("iam:PassRole", arn("role", "admin-box")))},
                          trust_doc=trust({"AWS": f"arn:aws:iam::{ACCT}:root"})),
                     role("admin-box", {"all": doc(ADMIN)})]),
    ),
    "AWS-SH-009": (
        authz(roles=[dict(role("untagged"), Tags=[])],
              users=[dict(user("empty-owner"), Tags=[{"Key": "Owner", "Value": ""}])]),
        [(arn("role", "untagged"), "low"), (arn("user", "empty-owner"), "low")],
        authz(roles=[dict(role("team-tagged"), Tags=[{"Key": "Team", "Value": "ml-infra"}])],
              users=[dict(user("owned"), Tags=[{"Key": "owner", "Value": "alice"}])]),
    ),
    "AWS-SH-010": (
        authz(roles=[role("handmade"), role("handmade-admin", {"all": doc(ADMIN)})]),
        [(arn("role", "handmade"), "low"), (arn("role", "handmade-admin"), "medium")],
        authz(roles=[role("tf-role"), role("cfn-role"), role("any-account-name"),
                     role("AWSReservedSSO_Admin_0123456789abcdef",
                          path="/aws-reserved/sso.amazonaws.com/"),
                     role("AWSControlTowerExecution")],
              users=[user("tf-user")]),
    ),
    "AWS-OP-005": (
        authz(roles=[role("passer", {"p": doc(allow(["iam:PassRole", "ec2:RunInstances"]))})],
              users=[user("key-maker", {"p": doc(allow("iam:CreateAccessKey",
                                                       f"arn:aws:iam::{ACCT}:user/*"))}),
                     dict(user("member"), GroupList=["deployers"])],
              groups=[group("deployers", {"p": doc(allow("lambda:UpdateFunctionCode"))})]),
        [(arn("role", "passer"), "high"), (arn("user", "key-maker"), "high"),
         (arn("group", "deployers"), "high")],
        authz(roles=[role("pass-one", {"p": doc(
            allow("iam:PassRole", arn("role", "app")), allow("ec2:RunInstances"))})],
            users=[user("own-keys", {"p": doc(allow(
                "iam:CreateAccessKey", f"arn:aws:iam::{ACCT}:user/${{aws:username}}"))}),
                user("tagged", {"p": doc(allow("lambda:UpdateFunctionCode", Condition={
                    "StringEquals": {"aws:ResourceTag/owner": "${aws:username}"}}))})]),
    ),
    "AWS-OP-010": (
        authz(roles=[dict(role("admin-ec2", attached=[
            "arn:aws:iam::aws:policy/AdministratorAccess"]), InstanceProfileList=[{
                "Path": "/", "InstanceProfileName": "admin-ec2", "InstanceProfileId": "AIPA1",
                "Arn": arn("instance-profile", "admin-ec2"), "CreateDate": "2020-01-01T00:00:00Z",
                "Roles": []}]),
            role("eq-lambda", {"p": doc(allow("iam:PutRolePolicy", arn("role", "eq-lambda")))},
                 trust_doc=trust({"Service": "lambda.amazonaws.com"}))]),
        [(arn("role", "admin-ec2"), "high"), (arn("role", "eq-lambda"), "high")],
        authz(roles=[role("admin-by-people", attached=[
            "arn:aws:iam::aws:policy/AdministratorAccess"],
            trust_doc=trust({"AWS": f"arn:aws:iam::{ACCT}:root"})),
            role("plain-ec2", {"p": doc(allow("s3:GetObject", "arn:aws:s3:::data/*"))})]),
    ),
    "AWS-OP-003": (
        authz(roles=[role("iam-wild", {"p": doc(allow("iam:*"))}),
                     role("ec2-wild", {"p": doc(allow(["ec2:*"]))})]),
        [(arn("role", "iam-wild"), "high"), (arn("role", "ec2-wild"), "medium")],
        authz(roles=[role("scoped", {"p": doc(allow("s3:*", "arn:aws:s3:::bucket"),
                                              allow("s3:Get*"))})]),
    ),
    "AWS-OP-004": (
        authz(groups=[group("notaction", {"p": doc({"Effect": "Allow", "NotAction": ["iam:*"],
                                                     "Resource": "*"})})],
              users=[user("notresource", {"p": doc({"Effect": "Allow", "Action": "s3:GetObject",
                                                     "NotResource": "arn:aws:s3:::secret/*"})})]),
        [(arn("group", "notaction"), "high"), (arn("user", "notresource"), "high")],
        authz(groups=[group("deny-except", {"p": doc({"Effect": "Deny", "NotAction": ["iam:*"],
                                                       "Resource": "*"})})]),
    ),
    "AWS-OP-007": (
        authz(roles=[role("reads-secrets", {"p": doc(allow("secretsmanager:GetSecretValue"))}),
                     role("makes-keys", {"p": doc(allow(["iam:Create*", "ec2:Describe*"]))})]),
        [(arn("role", "reads-secrets"), "high"), (arn("role", "makes-keys"), "high")],
        authz(roles=[role("one-secret", {"p": doc(allow(
            "secretsmanager:GetSecretValue",
            f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:app-AbCdEf"))}),
            role("tagged", {"p": doc(allow("secretsmanager:GetSecretValue", Condition={
                "StringEquals": {"aws:ResourceTag/team": "ml"}}))})]),
    ),
    "AWS-OP-008": (
        authz(roles=[role("reads-all", {"p": doc(allow(["s3:GetObject", "s3:ListBucket"]))})]),
        [(arn("role", "reads-all"), "medium")],
        authz(roles=[role("reads-one", {"p": doc(allow("s3:GetObject",
                                                       "arn:aws:s3:::datasets/*"))})]),
    ),
    "AWS-OP-009": (
        authz(users=[user("sets-policies", {"p": doc(allow("s3:PutBucketPolicy"))})]),
        [(arn("user", "sets-policies"), "high")],
        authz(users=[user("one-bucket", {"p": doc(allow("s3:PutBucketPolicy",
                                                        "arn:aws:s3:::logs"))})]),
    ),
    "AWS-OP-011": (
        authz(roles=[role("any")]),
        [(f"arn:aws:iam::{ACCT}:root", "info")],
        # A credential report alone says nothing about granted permissions: no note.
        {"Content": "user,arn,user_creation_time,access_key_1_active\n"
                    f"alice,{arn('user', 'alice')},2020-01-01T00:00:00+00:00,false\n",
         "ReportFormat": "text/csv"},
    ),
    "AWS-OP-012": (
        authz(roles=[role("uses-cmp", attached=[arn("policy", "old-admin")])],
              policies=[policy("old-admin", {"v2": doc(allow("s3:ListAllMyBuckets")),
                                             "v1": doc(ADMIN)}, 1, default="v2")]),
        [(arn("policy", "old-admin"), "medium")],
        authz(roles=[role("uses-cmp", attached=[arn("policy", "clean-history")])],
              policies=[policy("clean-history", {"v2": doc(allow("s3:ListAllMyBuckets")),
                                                 "v1": doc(allow("s3:ListBucket"))}, 1,
                               default="v2")]),
    ),
    "AWS-OP-013": (
        authz(policies=[policy("spare-admin", {"v1": doc(ADMIN)}, 0)]),
        [(arn("policy", "spare-admin"), "low")],
        authz(roles=[role("admin", attached=[arn("policy", "used-admin")])],
              policies=[policy("used-admin", {"v1": doc(ADMIN)}, 1),
                        policy("AdministratorAccess", {"v1": doc(ADMIN)}, 0, aws_managed=True)]),
    ),
    "AWS-TR-001": (
        authz(roles=[role("public", trust_doc=trust("*"))]),
        [(arn("role", "public"), "critical")],
        authz(roles=[role("own-account", trust_doc=trust({"AWS": f"arn:aws:iam::{ACCT}:root"}))]),
    ),
    "AWS-TR-002": (
        authz(roles=[role("org-wide", trust_doc=trust({"AWS": "*"}, condition={
            "StringEquals": {"aws:PrincipalOrgID": "o-abcdef1234"}}))]),
        [(arn("role", "org-wide"), "medium")],
        authz(roles=[role("named", trust_doc=trust({"AWS": f"arn:aws:iam::{ACCT}:role/ci"}))]),
    ),
    "AWS-TR-003": (
        authz(roles=[role("to-stranger", trust_doc=trust(
            {"AWS": "arn:aws:iam::999988887777:root"},
            condition={"StringEquals": {"sts:ExternalId": "x-1"}})),
            role("admin-to-stranger", {"a": doc(ADMIN)}, trust_doc=trust(
                {"AWS": ["999988887777"]},
                condition={"StringEquals": {"sts:ExternalId": "x-2"}}))]),
        [(arn("role", "to-stranger"), "medium"), (arn("role", "admin-to-stranger"), "high")],
        authz(roles=[role("to-known", trust_doc=trust({"AWS": "arn:aws:iam::444455556666:root"},
                                                      condition={"StringEquals": {
                                                          "sts:ExternalId": "x-3"}}))]),
    ),
    "AWS-TR-004": (
        authz(roles=[role("vendor", trust_doc=trust(
            {"AWS": "arn:aws:iam::999988887777:role/vendor-scanner"}))]),
        [(arn("role", "vendor"), "medium")],
        # An account of the estate (known-accounts.txt) is not a third party.
        authz(roles=[role("vendor-extid", trust_doc=trust(
            {"AWS": "arn:aws:iam::999988887777:role/vendor-scanner"},
            condition={"StringEquals": {"sts:ExternalId": "7c1a"}})),
            role("mfa-humans", trust_doc=trust(
                {"AWS": "arn:aws:iam::999988887777:root"},
                condition={"Bool": {"aws:MultiFactorAuthPresent": "true"}})),
            role("same-account", trust_doc=trust({"AWS": f"arn:aws:iam::{ACCT}:role/ci"})),
            role("sister-account", trust_doc=trust({"AWS": "arn:aws:iam::444455556666:root"}))]),
    ),
    "AWS-TR-005": (
        authz(roles=[role("gha-any-repo", trust_doc=trust(
            {"Federated": GH}, "sts:AssumeRoleWithWebIdentity",
            {"StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"}})),
            role("eks-any-sa", trust_doc=trust(
                {"Federated": EKS}, "sts:AssumeRoleWithWebIdentity",
                {"StringLike": {f"{EKS_HOST}:sub": "*"}}))]),
        [(arn("role", "gha-any-repo"), "critical"), (arn("role", "eks-any-sa"), "critical")],
        authz(roles=[role("gha-pinned", trust_doc=trust(
            {"Federated": GH}, "sts:AssumeRoleWithWebIdentity",
            {"StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                              "token.actions.githubusercontent.com:sub":
                                  "repo:example/train:ref:refs/heads/main"}})),
            role("eks-pinned", trust_doc=trust(
                {"Federated": EKS}, "sts:AssumeRoleWithWebIdentity",
                {"StringEquals": {f"{EKS_HOST}:sub": "system:serviceaccount:ml:trainer"}}))]),
    ),
    "AWS-TR-006": (
        authz(roles=[role("codebuild", trust_doc=trust({"Service": ["codebuild.amazonaws.com"]}))]),
        [(arn("role", "codebuild"), "medium")],
        authz(roles=[role("codebuild-guarded", trust_doc=trust(
            {"Service": "codebuild.amazonaws.com"},
            condition={"StringEquals": {"aws:SourceAccount": ACCT}})),
            role("ec2-instance", trust_doc=EC2_TRUST),
            role("AWSServiceRoleForCodeBuild", trust_doc=trust(
                {"Service": "codebuild.amazonaws.com"}), **SLR)]),
    ),
    "AWS-SH-001": (
        authz(roles=[role("never-used", last_used=""),
                     role("stale", last_used="2025-01-01T00:00:00Z")]),
        [(arn("role", "never-used"), "medium"), (arn("role", "stale"), "medium")],
        authz(roles=[role("recent", last_used="2026-09-11 00:00:00+00:00"),
                     role("brand-new", last_used="", created="2026-09-19T00:00:00Z"),
                     role("no-tracking-data", last_used=None),
                     role("AWSServiceRoleForSupport", last_used="", **SLR)]),
    ),
}

HEADER = ("user,arn,user_creation_time,password_enabled,password_last_used,"
          "password_last_changed,password_next_rotation,mfa_active,access_key_1_active,"
          "access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,"
          "access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,"
          "access_key_2_last_used_date,access_key_2_last_used_region,"
          "access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,"
          "cert_2_last_rotated")


def row(name, pwd="false", k1=None, k2=None):
    """k1/k2: None (no key) or (active, rotated, last_used)."""
    def key(k):
        if k is None:
            return ["false", "N/A", "N/A", "N/A", "N/A"]
        active, rotated, used = k
        return ["true" if active else "false", rotated, used,
                "N/A" if used == "N/A" else "us-east-1", "N/A" if used == "N/A" else "s3"]
    a = f"arn:aws:iam::{ACCT}:root" if name == "<root_account>" else arn("user", name)
    pw = "not_supported" if name == "<root_account>" else pwd
    return ",".join([name, a, "2020-01-01T00:00:00+00:00", pw, "N/A", "N/A", "N/A", "false"]
                    + key(k1) + key(k2) + ["false", "N/A", "false", "N/A"])


FRESH = (True, "2026-09-01T00:00:00+00:00", "2026-09-20T00:00:00+00:00")
CSV_CASES = {
    "AWS-SH-002": ([row("idle-key", k1=(True, "2026-08-01T00:00:00+00:00",
                                        "2026-05-01T00:00:00+00:00"))],
                   [(arn("user", "idle-key"), "medium")],
                   [row("busy-key", k1=FRESH)]),
    "AWS-SH-003": ([row("unused-key", k1=(True, "2026-09-01T00:00:00+00:00", "N/A"))],
                   [(arn("user", "unused-key"), "medium")],
                   [row("new-key", k1=(True, "2026-09-19T00:00:00+00:00", "N/A")),
                    row("inactive-key", k1=(False, "2020-01-01T00:00:00+00:00", "N/A"))]),
    "AWS-SH-004": ([row("old-key", k1=(True, "2025-01-01T00:00:00+00:00",
                                       "2026-09-20T00:00:00+00:00"))],
                   [(arn("user", "old-key"), "medium")],
                   [row("rotated-key", k1=FRESH),
                    row("old-inactive", k1=(False, "2019-01-01T00:00:00+00:00", "N/A"))]),
    "AWS-SH-005": ([row("two-keys", k1=FRESH, k2=FRESH)],
                   [(arn("user", "two-keys"), "low")],
                   [row("one-active", k1=FRESH, k2=(False, "2020-01-01T00:00:00+00:00", "N/A"))]),
    "AWS-SH-006": ([row("machine", k1=FRESH)],
                   [(arn("user", "machine"), "medium")],
                   [row("person", pwd="true"), row("no-creds")]),
    "AWS-SH-007": ([row("mixed", pwd="true", k1=FRESH)],
                   [(arn("user", "mixed"), "medium")],
                   [row("console-only", pwd="true",
                        k1=(False, "2020-01-01T00:00:00+00:00", "N/A"))]),
    "AWS-SH-008": ([row("<root_account>", k1=FRESH)],
                   [(f"arn:aws:iam::{ACCT}:root", "critical")],
                   [row("<root_account>")]),
}


# Options a case needs; "@NAME" is a file written to OUT (IAC_FILES).
EXTRA_ARGS = {
    "AWS-SH-009": ["--owner-tag-keys", "owner,team"],
    "AWS-SH-010": ["--iac-inventory", "@iac-terraform.json", "--iac-inventory", "@iac-cfn.json"],
}
IAC_FILES = {
    # terraform show -json of a state: tf-role by ARN in a child module, tf-user by name only
    # (a plan's unknown ARN), any-account-name by name without an ARN.
    "iac-terraform.json": {
        "format_version": "1.0", "terraform_version": "1.9.0",
        "values": {"root_module": {
            "resources": [
                {"address": "aws_iam_user.tf", "mode": "managed", "type": "aws_iam_user",
                 "name": "tf", "values": {"name": "tf-user", "path": "/"}},
                {"address": "data.aws_iam_role.handmade", "mode": "data",
                 "type": "aws_iam_role", "name": "handmade",
                 "values": {"arn": arn("role", "handmade"), "name": "handmade"}}],
            "child_modules": [{"address": "module.app", "resources": [
                {"address": "module.app.aws_iam_role.r", "mode": "managed",
                 "type": "aws_iam_role", "name": "r",
                 "values": {"arn": arn("role", "tf-role"), "name": "tf-role"}},
                {"address": "module.app.aws_iam_role.n", "mode": "managed",
                 "type": "aws_iam_role", "name": "n",
                 "values": {"name": "any-account-name"}}]}]}}},
    # aws cloudformation describe-stack-resources
    "iac-cfn.json": {"StackResources": [
        {"StackName": "app", "LogicalResourceId": "Role",
         "StackId": f"arn:aws:cloudformation:us-east-1:{ACCT}:stack/app/0f1e2d3c",
         "PhysicalResourceId": "cfn-role", "ResourceType": "AWS::IAM::Role",
         "ResourceStatus": "CREATE_COMPLETE"},
        {"StackName": "other", "LogicalResourceId": "Role",
         "StackId": "arn:aws:cloudformation:us-east-1:444455556666:stack/other/1a2b",
         "PhysicalResourceId": "handmade-admin", "ResourceType": "AWS::IAM::Role",
         "ResourceStatus": "CREATE_COMPLETE"}]},
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, d in IAC_FILES.items():
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(d, f, indent=1)
            f.write("\n")
    expected = {}
    for rule, (pos, want, neg) in CASES.items():
        for kind, d in (("pos", pos), ("neg", neg)):
            with open(os.path.join(OUT, f"{rule}.{kind}.json"), "w") as f:
                json.dump(d, f, indent=1)
                f.write("\n")
        expected[rule] = {"positive": f"{rule}.pos.json", "negative": f"{rule}.neg.json",
                          "findings": [{"resource": r, "severity": s} for r, s in want]}
        if rule in EXTRA_ARGS:
            expected[rule]["args"] = EXTRA_ARGS[rule]
    for rule, (pos, want, neg) in CSV_CASES.items():
        for kind, rows in (("pos", pos), ("neg", neg)):
            with open(os.path.join(OUT, f"{rule}.{kind}.csv"), "w") as f:
                f.write("\n".join([HEADER] + rows) + "\n")
        expected[rule] = {"positive": f"{rule}.pos.csv", "negative": f"{rule}.neg.csv",
                          "findings": [{"resource": r, "severity": s} for r, s in want]}
    with open(os.path.join(OUT, "known-accounts.txt"), "w") as f:
        f.write("# accounts the fixtures trust on purpose (AWS-TR-003 negative case)\n"
                "444455556666\n")
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"now": NOW, "rules": expected}, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
