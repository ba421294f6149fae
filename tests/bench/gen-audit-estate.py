#!/usr/bin/env python3
"""tests/bench/gen-audit-estate.py - a synthetic cloud estate for benchmarking `ferry audit`.

usage: gen-audit-estate.py [-o DIR] [-s SCALE] [--seed N] [--clouds aws,gcp,azure,k8s]
                           [--roles N] [--now EPOCH]

Writes, deterministically from the seed (the same arguments give the same bytes):
  DIR/aws/ACCOUNT-authz.json       `aws iam get-account-authorization-details` as the CLI
                                   prints it (4-space indent, AWS-managed policies included
                                   in Policies when attached), one per account
  DIR/aws/ACCOUNT-credreport.json  `aws iam get-credential-report` (base64 Content)
  DIR/gcp/PROJECT-service-accounts.json, -keys.json, -iam-policy.json
                                   `gcloud iam service-accounts list`, `... keys list` (all
                                   the project's accounts' keys), `gcloud projects
                                   get-iam-policy`, --format=json
  DIR/azure/SUB-sp-list.json, -role-assignments.json, -role-definitions.json
                                   `az ad sp list`, `az role assignment list --all`,
                                   `az role definition list --custom-role-only true`
  DIR/k8s/CLUSTER-serviceaccounts.json, -secrets.json, -clusterroles.json,
          -clusterrolebindings.json, -rolebindings.json
                                   `kubectl get ... -A -o json` (kind: List)
  DIR/estate.json                  the parameters and the counts of what was written

SCALE multiplies the number of accounts / projects / subscriptions / clusters (1000 each at
1.0), never the size of one: every file has the same shape and about the same size at any
scale, so a small run has the largest input of a full one. Each unit holds --roles
identities (500): AWS roles (plus 40 users, 8 groups and 30 customer-managed policies), GCP
service accounts, Azure service principals, Kubernetes service accounts.

A realistic share of them is risky so that rules fire: full-admin and service-wildcard
statements, NotAction, PassRole with RunInstances, secrets reads on "*", unpinned GitHub
OIDC trust, service trust without aws:SourceAccount, third-party trust without ExternalId,
Principal "*", unused roles, old and unrotated keys, basic roles on GCP service accounts,
Owner on Azure service principals, cluster-admin bindings to service accounts, ...

Python 3 standard library only.
"""

import argparse
import base64
import json
import os
import random
import sys
import time

DAY = 86400
# A fixed clock so the dated rules give the same findings whatever day the run is.
DEFAULT_NOW = 1795000000  # 2026-11-18T07:46:40Z


def iso(t, frac=False):
    s = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    return s + (".000000+00:00" if frac else "+00:00")


def zulu(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def ident(rng, prefix, n=17):
    return prefix + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(n))


def uuid(rng):
    h = "%032x" % rng.getrandbits(128)
    return "%s-%s-4%s-8%s-%s" % (h[:8], h[8:12], h[13:16], h[17:20], h[20:32])


def write_json(path, doc, indent):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=indent, ensure_ascii=False)
        f.write("\n")
    return os.path.getsize(path)


# ---- AWS -------------------------------------------------------------------------------------

TEAMS = ["payments", "search", "ledger", "checkout", "identity", "data", "ml", "platform",
         "billing", "ads", "mobile", "infra", "risk", "growth", "support"]
APPS = ["api", "worker", "etl", "batch", "ingest", "reports", "sync", "cron", "gateway",
        "indexer", "scheduler", "exporter"]
SERVICES = ["s3", "dynamodb", "sqs", "sns", "kinesis", "logs", "cloudwatch", "ec2", "lambda",
            "ecr", "ecs", "rds", "glue", "athena", "kms", "secretsmanager", "ssm", "sts",
            "states", "events", "elasticache", "es", "firehose", "xray"]
READ_ACTIONS = {
    "s3": ["s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:GetBucketLocation"],
    "dynamodb": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"],
    "sqs": ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage",
            "sqs:GetQueueAttributes"],
    "sns": ["sns:Publish"],
    "kinesis": ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:GetRecords",
                "kinesis:GetShardIterator"],
    "logs": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:CreateLogGroup"],
    "kms": ["kms:Decrypt", "kms:GenerateDataKey"],
    "secretsmanager": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
    "ssm": ["ssm:GetParameter", "ssm:GetParametersByPath"],
}
AWS_MANAGED = {
    "AdministratorAccess": ("/", [{"Effect": "Allow", "Action": "*", "Resource": "*"}]),
    "ReadOnlyAccess": ("/", [{"Effect": "Allow", "Action": [
        "acm:Describe*", "acm:Get*", "acm:List*", "autoscaling:Describe*", "cloudformation:Describe*",
        "cloudformation:Get*", "cloudformation:List*", "cloudfront:Get*", "cloudfront:List*",
        "cloudtrail:Describe*", "cloudtrail:Get*", "cloudtrail:LookupEvents", "cloudwatch:Describe*",
        "cloudwatch:Get*", "cloudwatch:List*", "dynamodb:BatchGetItem", "dynamodb:Describe*",
        "dynamodb:GetItem", "dynamodb:List*", "dynamodb:Query", "dynamodb:Scan", "ec2:Describe*",
        "ec2:Get*", "ecr:BatchGetImage", "ecr:Describe*", "ecr:Get*", "ecr:List*", "ecs:Describe*",
        "ecs:List*", "eks:Describe*", "eks:List*", "elasticloadbalancing:Describe*", "iam:Get*",
        "iam:List*", "kms:Describe*", "kms:Get*", "kms:List*", "lambda:Get*", "lambda:List*",
        "logs:Describe*", "logs:Get*", "logs:FilterLogEvents", "rds:Describe*", "rds:List*",
        "route53:Get*", "route53:List*", "s3:Get*", "s3:List*", "sns:Get*", "sns:List*",
        "sqs:Get*", "sqs:List*", "ssm:Describe*", "ssm:Get*", "ssm:List*", "sts:GetCallerIdentity",
        "tag:Get*"], "Resource": "*"}]),
    "AmazonS3FullAccess": ("/", [{"Effect": "Allow", "Action": ["s3:*", "s3-object-lambda:*"],
                                  "Resource": "*"}]),
    "AmazonS3ReadOnlyAccess": ("/", [{"Effect": "Allow", "Action": [
        "s3:Get*", "s3:List*", "s3:Describe*", "s3-object-lambda:Get*", "s3-object-lambda:List*"],
        "Resource": "*"}]),
    "AmazonDynamoDBFullAccess": ("/", [{"Effect": "Allow", "Action": [
        "dynamodb:*", "dax:*", "application-autoscaling:DescribeScalableTargets",
        "cloudwatch:GetMetricStatistics", "sns:ListTopics"], "Resource": "*"}]),
    "CloudWatchAgentServerPolicy": ("/", [{"Effect": "Allow", "Action": [
        "cloudwatch:PutMetricData", "ec2:DescribeVolumes", "ec2:DescribeTags",
        "logs:PutLogEvents", "logs:DescribeLogStreams", "logs:DescribeLogGroups",
        "logs:CreateLogStream", "logs:CreateLogGroup"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["ssm:GetParameter"],
         "Resource": "arn:aws:ssm:*:*:parameter/AmazonCloudWatch-*"}]),
    "AWSLambdaBasicExecutionRole": ("/service-role/", [{"Effect": "Allow", "Action": [
        "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], "Resource": "*"}]),
    "AmazonSSMManagedInstanceCore": ("/", [{"Effect": "Allow", "Action": [
        "ssm:DescribeAssociation", "ssm:GetDeployablePatchSnapshotForInstance", "ssm:GetDocument",
        "ssm:DescribeDocument", "ssm:GetManifest", "ssm:GetParameter", "ssm:GetParameters",
        "ssm:ListAssociations", "ssm:ListInstanceAssociations", "ssm:PutInventory",
        "ssm:PutComplianceItems", "ssm:PutConfigurePackageResult", "ssm:UpdateAssociationStatus",
        "ssm:UpdateInstanceAssociationStatus", "ssm:UpdateInstanceInformation"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["ssmmessages:CreateControlChannel",
                                       "ssmmessages:CreateDataChannel",
                                       "ssmmessages:OpenControlChannel",
                                       "ssmmessages:OpenDataChannel"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage",
                                       "ec2messages:FailMessage", "ec2messages:GetEndpoint",
                                       "ec2messages:GetMessages", "ec2messages:SendReply"],
         "Resource": "*"}]),
    "AmazonEC2ContainerRegistryReadOnly": ("/", [{"Effect": "Allow", "Action": [
        "ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer", "ecr:GetRepositoryPolicy", "ecr:DescribeRepositories",
        "ecr:ListImages", "ecr:DescribeImages", "ecr:BatchGetImage"], "Resource": "*"}]),
}
# Weights of the AWS-managed policies attached to roles (AdministratorAccess is rare).
AWS_MANAGED_WEIGHTS = [("AdministratorAccess", 1), ("ReadOnlyAccess", 6),
                       ("AmazonS3FullAccess", 3), ("AmazonS3ReadOnlyAccess", 10),
                       ("AmazonDynamoDBFullAccess", 3), ("CloudWatchAgentServerPolicy", 12),
                       ("AWSLambdaBasicExecutionRole", 20), ("AmazonSSMManagedInstanceCore", 12),
                       ("AmazonEC2ContainerRegistryReadOnly", 8)]


def pick_weighted(rng, pairs):
    total = sum(w for _, w in pairs)
    x = rng.random() * total
    for v, w in pairs:
        x -= w
        if x < 0:
            return v
    return pairs[-1][0]


def scoped_statement(rng, account, svc, name):
    acts = READ_ACTIONS.get(svc) or ["%s:Describe*" % svc, "%s:List*" % svc]
    acts = sorted(rng.sample(acts, k=max(1, min(len(acts), rng.randint(1, 4)))))
    if svc == "s3":
        res = ["arn:aws:s3:::%s-%s" % (name, account), "arn:aws:s3:::%s-%s/*" % (name, account)]
    elif svc == "dynamodb":
        res = "arn:aws:dynamodb:us-east-1:%s:table/%s" % (account, name)
    elif svc == "sqs":
        res = "arn:aws:sqs:us-east-1:%s:%s" % (account, name)
    elif svc == "secretsmanager":
        res = "arn:aws:secretsmanager:us-east-1:%s:secret:%s/*" % (account, name)
    elif svc == "ssm":
        res = "arn:aws:ssm:us-east-1:%s:parameter/%s/*" % (account, name)
    elif svc == "kms":
        res = "arn:aws:kms:us-east-1:%s:key/%s" % (account, uuid(rng))
    else:
        res = "*" if svc in ("logs", "cloudwatch", "xray", "ec2") else \
            "arn:aws:%s:us-east-1:%s:%s" % (svc, account, name)
    if isinstance(res, str) and len(acts) == 1 and rng.random() < 0.5:
        return {"Effect": "Allow", "Action": acts[0], "Resource": res}
    return {"Effect": "Allow", "Action": acts, "Resource": res}


# Risky statements, with weights; each makes at least one rule fire on its holder.
def risky_statement(rng, account, name):
    kind = pick_weighted(rng, [("admin", 4), ("svcstar", 25), ("sensitive", 10), ("notaction", 3),
                               ("passrole", 6), ("secrets", 10), ("exfil", 10), ("exposure", 6),
                               ("selfattach", 3), ("keys", 3), ("denyguard", 4)])
    if kind == "admin":
        return [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
    if kind == "svcstar":
        svc = rng.choice(["dynamodb", "sqs", "sns", "kinesis", "ec2", "lambda", "glue", "athena"])
        return [{"Sid": "All%s" % svc.capitalize(), "Effect": "Allow", "Action": "%s:*" % svc,
                 "Resource": "*"}]
    if kind == "sensitive":
        svc = rng.choice(["s3", "kms", "secretsmanager", "iam", "sts"])
        return [{"Effect": "Allow", "Action": ["%s:*" % svc], "Resource": ["*"]}]
    if kind == "notaction":
        return [{"Effect": "Allow", "NotAction": ["iam:*", "organizations:*", "account:*"],
                 "Resource": "*"}]
    if kind == "passrole":
        return [{"Effect": "Allow", "Action": ["iam:PassRole", "ec2:RunInstances",
                                               "ec2:DescribeInstances"], "Resource": "*"}]
    if kind == "secrets":
        return [{"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue",
                                               "ssm:GetParameter*"], "Resource": "*"}]
    if kind == "exfil":
        return [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket", "kms:Decrypt"],
                 "Resource": "*"}]
    if kind == "exposure":
        return [{"Effect": "Allow", "Action": ["s3:PutBucketPolicy", "s3:GetBucketPolicy"],
                 "Resource": "*"}]
    if kind == "selfattach":
        return [{"Effect": "Allow", "Action": ["iam:AttachRolePolicy", "iam:PutRolePolicy",
                                               "iam:CreateRole"], "Resource": "*"}]
    if kind == "keys":
        return [{"Effect": "Allow", "Action": "iam:CreateAccessKey", "Resource": "*"}]
    # A broad grant limited by a condition: fires OP-003 only.
    return [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*",
             "Condition": {"StringEquals": {"aws:RequestedRegion": ["us-east-1", "eu-west-1"]}}}]


def policy_document(rng, account, name, risky):
    stmts = [scoped_statement(rng, account, rng.choice(SERVICES), name)
             for _ in range(rng.randint(1, 3))]
    if risky:
        stmts += risky_statement(rng, account, name)
    return {"Version": "2012-10-17", "Statement": stmts}


def trust_policy(rng, account, other_accounts, name):
    kind = pick_weighted(rng, [("ec2", 30), ("lambda", 22), ("ecs", 10), ("svc_guarded", 5),
                               ("svc_open", 4), ("same", 8), ("estate", 8), ("third", 2),
                               ("third_ext", 3), ("gh_pinned", 4), ("gh_open", 1), ("eks", 3),
                               ("saml", 2), ("star_cond", 0.4), ("star", 0.1)])
    stmt = {"Effect": "Allow"}
    if kind in ("ec2", "lambda", "ecs"):
        svc = {"ec2": "ec2", "lambda": "lambda", "ecs": "ecs-tasks"}[kind]
        stmt.update({"Principal": {"Service": "%s.amazonaws.com" % svc},
                     "Action": "sts:AssumeRole"})
    elif kind in ("svc_guarded", "svc_open"):
        svc = rng.choice(["events", "states", "config", "firehose", "glue", "codebuild"])
        stmt.update({"Principal": {"Service": "%s.amazonaws.com" % svc},
                     "Action": "sts:AssumeRole"})
        if kind == "svc_guarded":
            stmt["Condition"] = {"StringEquals": {"aws:SourceAccount": account}}
    elif kind == "same":
        stmt.update({"Principal": {"AWS": "arn:aws:iam::%s:root" % account},
                     "Action": "sts:AssumeRole"})
    elif kind == "estate":
        stmt.update({"Principal": {"AWS": "arn:aws:iam::%s:role/deployer" %
                                   rng.choice(other_accounts)}, "Action": "sts:AssumeRole"})
    elif kind in ("third", "third_ext"):
        vendor = "%012d" % (900000000000 + rng.randint(0, 40))
        stmt.update({"Principal": {"AWS": "arn:aws:iam::%s:root" % vendor},
                     "Action": "sts:AssumeRole"})
        if kind == "third_ext":
            stmt["Condition"] = {"StringEquals": {"sts:ExternalId": "%08x" % rng.getrandbits(32)}}
    elif kind in ("gh_pinned", "gh_open"):
        stmt.update({"Principal": {"Federated": "arn:aws:iam::%s:oidc-provider/"
                                   "token.actions.githubusercontent.com" % account},
                     "Action": "sts:AssumeRoleWithWebIdentity",
                     "Condition": {"StringEquals": {
                         "token.actions.githubusercontent.com:aud": "sts.amazonaws.com"}}})
        if kind == "gh_pinned":
            stmt["Condition"]["StringLike"] = {
                "token.actions.githubusercontent.com:sub": "repo:acme/%s:ref:refs/heads/main" % name}
    elif kind == "eks":
        host = "oidc.eks.us-east-1.amazonaws.com/id/%032X" % rng.getrandbits(128)
        stmt.update({"Principal": {"Federated": "arn:aws:iam::%s:oidc-provider/%s" %
                                   (account, host)},
                     "Action": "sts:AssumeRoleWithWebIdentity",
                     "Condition": {"StringEquals": {
                         "%s:sub" % host: "system:serviceaccount:%s:%s" % (name.split("-")[0],
                                                                           name),
                         "%s:aud" % host: "sts.amazonaws.com"}}})
    elif kind == "saml":
        stmt.update({"Principal": {"Federated": "arn:aws:iam::%s:saml-provider/Okta" % account},
                     "Action": "sts:AssumeRoleWithSAML",
                     "Condition": {"StringEquals": {
                         "SAML:aud": "https://signin.aws.amazon.com/saml"}}})
    elif kind == "star_cond":
        stmt.update({"Principal": {"AWS": "*"}, "Action": "sts:AssumeRole",
                     "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}})
    else:
        stmt.update({"Principal": "*", "Action": "sts:AssumeRole"})
    return kind, {"Version": "2012-10-17", "Statement": [stmt]}


def aws_account(idx, seed, roles, now, all_accounts):
    rng = random.Random("%d:aws:%d" % (seed, idx))
    account = all_accounts[idx]
    others = [a for a in all_accounts[max(0, idx - 3):idx + 4] if a != account] or \
        ["%012d" % 111111111111]
    n_users, n_groups, n_cmp = 40, 8, 30

    # Customer-managed policies: 1-3 versions; a few unattached admin, a few with admin in an
    # old version.
    cmps = []
    for k in range(n_cmp):
        name = "%s-%s-policy-%d" % (rng.choice(TEAMS), rng.choice(APPS), k)
        arn = "arn:aws:iam::%s:policy/%s" % (account, name)
        nver = rng.randint(1, 3)
        risky = rng.random() < 0.15
        special = rng.random()
        versions = []
        for v in range(nver, 0, -1):
            doc = policy_document(rng, account, name, risky and v == nver)
            if special < 0.05 and v == 1 and nver > 1:
                doc = {"Version": "2012-10-17",
                       "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            versions.append({"Document": doc, "VersionId": "v%d" % v,
                             "IsDefaultVersion": v == nver,
                             "CreateDate": iso(now - DAY * (400 - 40 * v))})
        if 0.05 <= special < 0.08:
            versions[0]["Document"] = {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        cmps.append({"name": name, "arn": arn, "versions": versions, "count": 0,
                     "unattached": 0.05 <= special < 0.08})
    attachable = [c for c in cmps if not c["unattached"]]
    used_managed = {}

    def attach(lst):
        out = []
        for _ in range(lst):
            if rng.random() < 0.5:
                c = rng.choice(attachable)
                c["count"] += 1
                out.append({"PolicyName": c["name"], "PolicyArn": c["arn"]})
            else:
                m = pick_weighted(rng, AWS_MANAGED_WEIGHTS)
                path = AWS_MANAGED[m][0]
                arn = "arn:aws:iam::aws:policy%s%s" % (path, m)
                used_managed[m] = used_managed.get(m, 0) + 1
                out.append({"PolicyName": m, "PolicyArn": arn})
        uniq, seen = [], set()
        for e in out:
            if e["PolicyArn"] not in seen:
                seen.add(e["PolicyArn"])
                uniq.append(e)
        return uniq

    groups = []
    for g in range(n_groups):
        gname = "%s-%s" % (TEAMS[g % len(TEAMS)], rng.choice(["devs", "ops", "readers", "admins"]))
        gname = "%s-%d" % (gname, g)
        gp = []
        if rng.random() < 0.4:
            gp.append({"PolicyName": "%s-inline" % gname,
                       "PolicyDocument": policy_document(rng, account, gname,
                                                         rng.random() < 0.3)})
        groups.append({"Path": "/", "GroupName": gname, "GroupId": ident(rng, "AGPA"),
                       "Arn": "arn:aws:iam::%s:group/%s" % (account, gname),
                       "CreateDate": iso(now - DAY * rng.randint(300, 2000)),
                       "GroupPolicyList": gp,
                       "AttachedManagedPolicies": attach(rng.randint(0, 2))})

    users, report_rows = [], []
    for u in range(n_users):
        uname = "%s.%s%d" % (rng.choice(["svc", "ci", "deploy", "alice", "bob", "carol", "dave"]),
                             rng.choice(TEAMS), u)
        uarn = "arn:aws:iam::%s:user/%s" % (account, uname)
        created = now - DAY * rng.randint(30, 2500)
        up = []
        if rng.random() < 0.2:
            up.append({"PolicyName": "%s-inline" % uname,
                       "PolicyDocument": policy_document(rng, account, uname,
                                                         rng.random() < 0.3)})
        ug = sorted({groups[rng.randrange(n_groups)]["GroupName"]
                     for _ in range(rng.randint(0, 2))})
        users.append({"Path": "/", "UserName": uname, "UserId": ident(rng, "AIDA"), "Arn": uarn,
                      "CreateDate": iso(created), "UserPolicyList": up, "GroupList": ug,
                      "AttachedManagedPolicies": attach(rng.randint(0, 1)),
                      "Tags": [{"Key": "team", "Value": rng.choice(TEAMS)}]})
        report_rows.append((uname, uarn, created))

    role_list = []
    for r in range(roles):
        team, app = rng.choice(TEAMS), rng.choice(APPS)
        if r < 3:
            # Service-linked roles, as every account has (skipped by the rules).
            svc = ["ElasticLoadBalancing", "RDS", "AutoScaling"][r]
            rname = "AWSServiceRoleFor%s" % svc
            role_list.append({
                "Path": "/aws-service-role/%s.amazonaws.com/" % svc.lower(), "RoleName": rname,
                "RoleId": ident(rng, "AROA"), "Arn": "arn:aws:iam::%s:role/aws-service-role/"
                "%s.amazonaws.com/%s" % (account, svc.lower(), rname),
                "CreateDate": iso(now - DAY * 900),
                "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"Service": "%s.amazonaws.com" % svc.lower()},
                    "Action": "sts:AssumeRole"}]},
                "InstanceProfileList": [], "RolePolicyList": [],
                "AttachedManagedPolicies": [{"PolicyName": "%sServiceRolePolicy" % svc,
                                             "PolicyArn": "arn:aws:iam::aws:policy/aws-service-"
                                             "role/%sServiceRolePolicy" % svc}],
                "Tags": [], "RoleLastUsed": {"LastUsedDate": iso(now - DAY), "Region":
                                             "us-east-1"}})
            continue
        rname = "%s-%s-%d" % (team, app, r)
        arn = "arn:aws:iam::%s:role/%s" % (account, rname)
        kind, trust = trust_policy(rng, account, others, rname)
        inline = []
        for k in range(pick_weighted(rng, [(0, 25), (1, 50), (2, 20), (3, 5)])):
            inline.append({"PolicyName": "%s-%s" % (rname, ["main", "data", "extra"][k]),
                           "PolicyDocument": policy_document(rng, account, rname,
                                                             rng.random() < 0.12)})
        profiles = []
        if kind == "ec2":
            profiles.append({"Path": "/", "InstanceProfileName": rname,
                             "InstanceProfileId": ident(rng, "AIPA"),
                             "Arn": "arn:aws:iam::%s:instance-profile/%s" % (account, rname),
                             "CreateDate": iso(now - DAY * 400), "Roles": []})
        created = now - DAY * rng.randint(3, 2000)
        u = rng.random()
        if u < 0.72:
            last = {"LastUsedDate": iso(now - rng.randint(600, 60 * DAY)), "Region": "us-east-1"}
        elif u < 0.9:
            last = {"LastUsedDate": iso(now - rng.randint(120 * DAY, 900 * DAY)),
                    "Region": "eu-west-1"}
        else:
            last = {}
        role = {"Path": "/service-role/" if rng.random() < 0.1 else "/", "RoleName": rname,
                "RoleId": ident(rng, "AROA"), "Arn": arn, "CreateDate": iso(created),
                "AssumeRolePolicyDocument": trust, "InstanceProfileList": profiles,
                "RolePolicyList": inline,
                "AttachedManagedPolicies": attach(pick_weighted(rng, [(0, 30), (1, 40), (2, 20),
                                                                      (3, 10)])),
                "Tags": [{"Key": "team", "Value": team}, {"Key": "app", "Value": app}],
                "RoleLastUsed": last}
        if rng.random() < 0.05:
            role["PermissionsBoundary"] = {
                "PermissionsBoundaryType": "Policy",
                "PermissionsBoundaryArn": "arn:aws:iam::%s:policy/%s" % (account, cmps[0]["name"])}
        role_list.append(role)

    policies = []
    for m, count in sorted(used_managed.items()):
        path, stmts = AWS_MANAGED[m]
        policies.append({"PolicyName": m, "PolicyId": "ANPA" + m.upper()[:17].ljust(17, "X"),
                         "Arn": "arn:aws:iam::aws:policy%s%s" % (path, m), "Path": path,
                         "DefaultVersionId": "v7", "AttachmentCount": count,
                         "PermissionsBoundaryUsageCount": 0, "IsAttachable": True,
                         "CreateDate": "2015-02-06T18:39:46+00:00",
                         "UpdateDate": "2023-11-15T16:08:37+00:00",
                         "PolicyVersionList": [{"Document": {"Version": "2012-10-17",
                                                             "Statement": stmts},
                                                "VersionId": "v7", "IsDefaultVersion": True,
                                                "CreateDate": "2023-11-15T16:08:37+00:00"}]})
    for c in cmps:
        policies.append({"PolicyName": c["name"], "PolicyId": ident(rng, "ANPA"), "Arn": c["arn"],
                         "Path": "/", "DefaultVersionId": c["versions"][0]["VersionId"],
                         "AttachmentCount": c["count"], "PermissionsBoundaryUsageCount": 0,
                         "IsAttachable": True, "CreateDate": iso(now - DAY * 500),
                         "UpdateDate": iso(now - DAY * 100), "PolicyVersionList": c["versions"]})
    doc = {"UserDetailList": users, "GroupDetailList": groups, "RoleDetailList": role_list,
           "Policies": policies}

    # Credential report: root plus every user, keys in every state SH-002..008 look at.
    header = ("user,arn,user_creation_time,password_enabled,password_last_used,"
              "password_last_changed,password_next_rotation,mfa_active,access_key_1_active,"
              "access_key_1_last_rotated,access_key_1_last_used_date,"
              "access_key_1_last_used_region,access_key_1_last_used_service,"
              "access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,"
              "access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,"
              "cert_1_last_rotated,cert_2_active,cert_2_last_rotated")
    lines = [header]
    root_key = rng.random() < 0.02
    lines.append("<root_account>,arn:aws:iam::%s:root,%s,not_supported,%s,not_supported,"
                 "not_supported,true,%s,%s,%s,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A"
                 % (account, iso(now - DAY * 2600), iso(now - DAY * 20),
                    "true" if root_key else "false",
                    iso(now - DAY * 900) if root_key else "N/A",
                    iso(now - DAY * 30) if root_key else "N/A"))

    def key_cols(created):
        if rng.random() < 0.35:
            return ["false", "N/A", "N/A", "N/A", "N/A"]
        rot = now - DAY * rng.randint(1, min(1500, max(2, (now - created) // DAY)))
        x = rng.random()
        if x < 0.6:
            used = iso(now - DAY * rng.randint(0, 30))
        elif x < 0.85:
            used = iso(now - DAY * rng.randint(100, 400))
        else:
            used = "N/A"
        return ["true", iso(rot), used, "us-east-1" if used != "N/A" else "N/A",
                "s3" if used != "N/A" else "N/A"]

    for uname, uarn, created in report_rows:
        pwd = rng.random() < 0.3
        k1 = key_cols(created)
        k2 = key_cols(created) if rng.random() < 0.3 else ["false", "N/A", "N/A", "N/A", "N/A"]
        lines.append(",".join([uname, uarn, iso(created), "true" if pwd else "false",
                               iso(now - DAY * 3) if pwd else "N/A",
                               iso(created) if pwd else "N/A", "N/A",
                               "true" if pwd and rng.random() < 0.7 else "false"] + k1 + k2 +
                              ["false", "N/A", "false", "N/A"]))
    csv = "\n".join(lines) + "\n"
    report = {"Content": base64.b64encode(csv.encode()).decode(), "ReportFormat": "text/csv",
              "GeneratedTime": zulu(now - 3600)}
    return account, doc, report


def gen_aws(out, n, seed, roles, now):
    d = os.path.join(out, "aws")
    os.makedirs(d, exist_ok=True)
    rng = random.Random("%d:aws-accounts" % seed)
    accounts = sorted({"%012d" % rng.randint(100000000000, 899999999999) for _ in range(n * 2)})
    rng.shuffle(accounts)
    accounts = accounts[:n]
    sizes = []
    for i in range(n):
        account, doc, report = aws_account(i, seed, roles, now, accounts)
        sizes.append(write_json(os.path.join(d, "%s-authz.json" % account), doc, 4))
        sizes.append(write_json(os.path.join(d, "%s-credreport.json" % account), report, 4))
    return {"accounts": n, "roles_per_account": roles, "users_per_account": 40,
            "files": 2 * n, "bytes": sum(sizes)}


# ---- GCP -----------------------------------------------------------------------------------

GCP_ROLES_SAFE = ["roles/storage.objectViewer", "roles/pubsub.publisher", "roles/logging.logWriter",
                  "roles/monitoring.metricWriter", "roles/cloudsql.client",
                  "roles/secretmanager.secretAccessor", "roles/bigquery.dataViewer",
                  "roles/run.invoker", "roles/cloudtrace.agent"]
GCP_ROLES_RISKY = ["roles/owner", "roles/editor", "roles/iam.serviceAccountTokenCreator",
                   "roles/iam.serviceAccountKeyAdmin", "roles/resourcemanager.projectIamAdmin",
                   "roles/iam.serviceAccountUser"]


def gen_gcp(out, n, seed, ids, now):
    d = os.path.join(out, "gcp")
    os.makedirs(d, exist_ok=True)
    total = 0
    for p in range(n):
        rng = random.Random("%d:gcp:%d" % (seed, p))
        project = "%s-%s-%d" % (rng.choice(TEAMS), rng.choice(["prod", "stg", "dev"]), 100 + p)
        number = "%012d" % (200000000000 + p)
        sas, keys, bindings = [], [], {}
        defaults = [("%s-compute@developer.gserviceaccount.com" % number,
                     "Compute Engine default service account"),
                    ("%s@appspot.gserviceaccount.com" % project,
                     "App Engine default service account")]
        for i in range(ids):
            if i < len(defaults):
                email, disp = defaults[i]
            else:
                email = "%s-%s-%d@%s.iam.gserviceaccount.com" % (rng.choice(TEAMS),
                                                                  rng.choice(APPS), i, project)
                disp = email.split("@")[0]
            uid = "1%020d" % rng.getrandbits(64)
            sa = {"displayName": disp, "email": email, "etag": "MDEwMjE5MjA=",
                  "name": "projects/%s/serviceAccounts/%s" % (project, email),
                  "oauth2ClientId": uid, "projectId": project, "uniqueId": uid}
            if rng.random() < 0.03:
                sa["disabled"] = True
            sas.append(sa)
            for k in range(pick_weighted(rng, [(0, 55), (1, 35), (2, 10)])):
                user = rng.random() < 0.6
                after = now - DAY * rng.randint(1, 1200)
                keys.append({"keyAlgorithm": "KEY_ALG_RSA_2048",
                             "keyOrigin": "GOOGLE_PROVIDED",
                             "keyType": "USER_MANAGED" if user else "SYSTEM_MANAGED",
                             "name": "projects/%s/serviceAccounts/%s/keys/%040x" %
                             (project, email, rng.getrandbits(160)),
                             "validAfterTime": zulu(after),
                             "validBeforeTime": "9999-12-31T23:59:59Z" if user
                             else zulu(after + 17 * DAY)})
            role = rng.choice(GCP_ROLES_RISKY) if (i < 2 or rng.random() < 0.08) \
                else rng.choice(GCP_ROLES_SAFE)
            bindings.setdefault(role, []).append("serviceAccount:" + email)
        bindings.setdefault("roles/owner", []).append("user:admin@example.com")
        bindings.setdefault("roles/viewer", []).append("group:eng@example.com")
        if p % 10 == 0:
            bindings.setdefault("roles/storage.objectViewer", []).append("allAuthenticatedUsers")
        if p % 7 == 0:
            bindings.setdefault("roles/editor", []).append(
                "deleted:serviceAccount:old-%d@%s.iam.gserviceaccount.com?uid=1%020d" %
                (p, project, p))
        pol = {"bindings": [{"members": sorted(m), "role": r} for r, m in sorted(bindings.items())],
               "etag": "BwYC2Vx8Q0o=", "version": 1}
        total += write_json(os.path.join(d, "%s-service-accounts.json" % project), sas, 2)
        total += write_json(os.path.join(d, "%s-keys.json" % project), keys, 2)
        total += write_json(os.path.join(d, "%s-iam-policy.json" % project), pol, 2)
    return {"projects": n, "service_accounts_per_project": ids, "files": 3 * n, "bytes": total}


# ---- Azure ---------------------------------------------------------------------------------

AZ_BUILTIN = [("Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", 2),
              ("Contributor", "b24988ac-6180-42a0-ab88-20f7382dd24c", 6),
              ("Reader", "acdd72a7-3385-48ef-bd42-f606fba81ae7", 40),
              ("User Access Administrator", "18d7d88d-d35e-4fb5-a5c3-7773c4a72b9d", 1),
              ("Storage Blob Data Reader", "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", 25),
              ("Key Vault Secrets User", "4633458b-17de-408a-b874-0445c86b69e6", 15)]


def gen_azure(out, n, seed, ids, now):
    d = os.path.join(out, "azure")
    os.makedirs(d, exist_ok=True)
    total = 0
    tenant = "72f988bf-0000-0000-0000-000000000001"
    for s in range(n):
        rng = random.Random("%d:azure:%d" % (seed, s))
        sub = uuid(rng)
        scope = "/subscriptions/%s" % sub
        sps, ras = [], []
        customs = []
        for c in range(20):
            cid = uuid(rng)
            broad = c < 2
            customs.append({
                "assignableScopes": [scope], "createdBy": uuid(rng),
                "createdOn": iso(now - DAY * 700, True),
                "description": "custom role %d" % c,
                "id": "%s/providers/Microsoft.Authorization/roleDefinitions/%s" % (scope, cid),
                "name": cid,
                "permissions": [{"actions": ["*"] if broad else
                                 ["Microsoft.Compute/virtualMachines/read",
                                  "Microsoft.Storage/storageAccounts/read"] +
                                 (["Microsoft.Authorization/roleAssignments/write"]
                                  if c % 5 == 0 else []),
                                 "condition": None, "conditionVersion": None,
                                 "dataActions": [], "notActions": [], "notDataActions": []}],
                "roleName": "custom-%s-%d" % (rng.choice(TEAMS), c), "roleType": "CustomRole",
                "type": "Microsoft.Authorization/roleDefinitions", "updatedBy": None,
                "updatedOn": iso(now - DAY * 300, True)})
        for i in range(ids):
            app = uuid(rng)
            oid = uuid(rng)
            kind = pick_weighted(rng, [("Application", 70), ("ManagedIdentity", 25),
                                       ("vendor", 5)])
            name = "%s-%s-%d" % (rng.choice(TEAMS), rng.choice(APPS), i)
            creds = []
            if kind == "Application" and rng.random() < 0.7:
                start = now - DAY * rng.randint(10, 1500)
                end = start + DAY * rng.choice([180, 365, 730, 36500])
                creds.append({"customKeyIdentifier": None, "displayName": "ci",
                              "endDateTime": zulu(end), "hint": "Q~a", "keyId": uuid(rng),
                              "secretText": None, "startDateTime": zulu(start)})
            sps.append({
                "accountEnabled": True, "addIns": [], "alternativeNames": [],
                "appDescription": None, "appDisplayName": name, "appId": app,
                "appOwnerOrganizationId": tenant if kind != "vendor" else uuid(rng),
                "appRoleAssignmentRequired": False, "appRoles": [],
                "applicationTemplateId": None, "deletedDateTime": None, "description": None,
                "disabledByMicrosoftStatus": None, "displayName": name, "homepage": None,
                "id": oid, "keyCredentials": [], "loginUrl": None, "logoutUrl": None,
                "notes": None, "notificationEmailAddresses": [], "oauth2PermissionScopes": [],
                "passwordCredentials": creds, "preferredSingleSignOnMode": None,
                "replyUrls": [], "servicePrincipalNames": [app],
                "servicePrincipalType": "ManagedIdentity" if kind == "ManagedIdentity"
                else "Application",
                "signInAudience": "AzureADMultipleOrgs" if kind == "vendor" else "AzureADMyOrg",
                "tags": []})
            for _ in range(pick_weighted(rng, [(1, 60), (2, 30), (3, 10)])):
                if rng.random() < 0.05:
                    rname, rid = customs[rng.randrange(20)]["roleName"], customs[0]["name"]
                    rdef = customs[0]["id"]
                else:
                    rname, rid, _w = pick_weighted(rng, [((a, b, w), w) for a, b, w in AZ_BUILTIN])
                    rdef = "%s/providers/Microsoft.Authorization/roleDefinitions/%s" % (scope, rid)
                aid = uuid(rng)
                ras.append({
                    "condition": None, "conditionVersion": None, "createdBy": uuid(rng),
                    "createdOn": iso(now - DAY * rng.randint(1, 1500), True),
                    "delegatedManagedIdentityResourceId": None, "description": None,
                    "id": "%s/providers/Microsoft.Authorization/roleAssignments/%s" % (scope, aid),
                    "name": aid, "principalId": oid, "principalName": app,
                    "principalType": "ServicePrincipal", "roleDefinitionId": rdef,
                    "roleDefinitionName": rname,
                    "scope": scope if rng.random() < 0.4 else
                    "%s/resourceGroups/rg-%s" % (scope, rng.choice(TEAMS)),
                    "type": "Microsoft.Authorization/roleAssignments", "updatedBy": uuid(rng),
                    "updatedOn": iso(now - DAY * 10, True)})
        for k in range(5):  # deleted principals
            aid = uuid(rng)
            ras.append({"condition": None, "conditionVersion": None, "createdBy": uuid(rng),
                        "createdOn": iso(now - DAY * 900, True),
                        "delegatedManagedIdentityResourceId": None, "description": None,
                        "id": "%s/providers/Microsoft.Authorization/roleAssignments/%s" %
                        (scope, aid), "name": aid, "principalId": uuid(rng), "principalName": "",
                        "principalType": "Unknown",
                        "roleDefinitionId": "%s/providers/Microsoft.Authorization/"
                        "roleDefinitions/%s" % (scope, AZ_BUILTIN[1][1]),
                        "roleDefinitionName": "Contributor", "scope": scope,
                        "type": "Microsoft.Authorization/roleAssignments", "updatedBy": None,
                        "updatedOn": iso(now - DAY * 900, True)})
        total += write_json(os.path.join(d, "%s-sp-list.json" % sub), sps, 2)
        total += write_json(os.path.join(d, "%s-role-assignments.json" % sub), ras, 2)
        total += write_json(os.path.join(d, "%s-role-definitions.json" % sub), customs, 2)
    return {"subscriptions": n, "service_principals_per_subscription": ids, "files": 3 * n,
            "bytes": total}


# ---- Kubernetes ----------------------------------------------------------------------------

def k8s_meta(rng, name, now, ns=None, **extra):
    m = {"name": name, "creationTimestamp": zulu(now - DAY * rng.randint(5, 1500)),
         "uid": uuid(rng), "resourceVersion": str(rng.randint(1000, 9999999))}
    if ns:
        m["namespace"] = ns
    m.update(extra)
    return m


def k8s_list(items):
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


def gen_k8s(out, n, seed, ids, now):
    d = os.path.join(out, "k8s")
    os.makedirs(d, exist_ok=True)
    total = 0
    rbac = "rbac.authorization.k8s.io"
    for c in range(n):
        rng = random.Random("%d:k8s:%d" % (seed, c))
        cluster = "%s-%s-%d" % (rng.choice(TEAMS), rng.choice(["prod", "stg"]), c)
        namespaces = ["kube-system", "default"] + ["%s-%d" % (t, c) for t in TEAMS[:10]]
        sas, secrets, crbs, rbs = [], [], [], []
        roles = [{"apiVersion": rbac + "/v1", "kind": "ClusterRole",
                  "metadata": k8s_meta(rng, "cluster-admin", now),
                  "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                            {"nonResourceURLs": ["*"], "verbs": ["*"]}]}]
        for r in range(60):
            risky = r % 12 == 0
            rules = [{"apiGroups": ["", "apps"], "resources": ["pods", "deployments", "services"],
                      "verbs": ["get", "list", "watch"]}]
            if risky:
                rules.append({"apiGroups": [""], "resources": ["secrets"],
                              "verbs": ["get", "list"]})
                rules.append({"apiGroups": [rbac], "resources": ["clusterrolebindings"],
                              "verbs": ["create", "bind", "escalate"]})
            roles.append({"apiVersion": rbac + "/v1", "kind": "ClusterRole",
                          "metadata": k8s_meta(rng, "%s-role-%d" % (rng.choice(APPS), r), now),
                          "rules": rules})
        for i in range(ids):
            ns = rng.choice(namespaces)
            name = "%s-%s-%d" % (rng.choice(APPS), "sa", i)
            ann = {}
            x = rng.random()
            if x < 0.15:
                ann["eks.amazonaws.com/role-arn"] = "arn:aws:iam::%012d:role/%s" % (
                    100000000000 + c, name)
            elif x < 0.25:
                ann["iam.gke.io/gcp-service-account"] = "%s@proj-%d.iam.gserviceaccount.com" % (
                    name, c)
            elif x < 0.3:
                ann["azure.workload.identity/client-id"] = uuid(rng)
            meta = k8s_meta(rng, name, now, ns)
            if ann:
                meta["annotations"] = ann
            sas.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})
            if rng.random() < 0.1:
                labels = {"kubernetes.io/legacy-token-last-used":
                          time.strftime("%Y-%m-%d", time.gmtime(now - DAY * rng.randint(1, 800)))}
                secrets.append({"apiVersion": "v1", "kind": "Secret",
                                "type": "kubernetes.io/service-account-token",
                                "metadata": k8s_meta(rng, "%s-token-%05x" % (name,
                                                                            rng.getrandbits(20)),
                                                     now, ns,
                                                     annotations={
                                                         "kubernetes.io/service-account.name":
                                                         name,
                                                         "kubernetes.io/service-account.uid":
                                                         meta["uid"]},
                                                     labels=labels),
                                "data": {"ca.crt": "<redacted>", "namespace": "<redacted>",
                                         "token": "<redacted>"}})
            subj = [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
            y = rng.random()
            if y < 0.02:
                crbs.append({"apiVersion": rbac + "/v1", "kind": "ClusterRoleBinding",
                             "metadata": k8s_meta(rng, "%s-admin" % name, now),
                             "roleRef": {"apiGroup": rbac, "kind": "ClusterRole",
                                         "name": "cluster-admin"}, "subjects": subj})
            elif y < 0.3:
                crbs.append({"apiVersion": rbac + "/v1", "kind": "ClusterRoleBinding",
                             "metadata": k8s_meta(rng, "%s-binding" % name, now),
                             "roleRef": {"apiGroup": rbac, "kind": "ClusterRole",
                                         "name": rng.choice(roles)["metadata"]["name"]},
                             "subjects": subj})
            else:
                rbs.append({"apiVersion": rbac + "/v1", "kind": "RoleBinding",
                            "metadata": k8s_meta(rng, "%s-%s" % (name, rng.choice(["edit", "view",
                                                                                   "admin"])),
                                                 now, ns),
                            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole",
                                        "name": rng.choice(["edit", "view", "admin"])},
                            "subjects": subj})
        # A binding to a deleted service account and one to system:anonymous.
        rbs.append({"apiVersion": rbac + "/v1", "kind": "RoleBinding",
                    "metadata": k8s_meta(rng, "old-job-edit", now, "default"),
                    "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "edit"},
                    "subjects": [{"kind": "ServiceAccount", "name": "old-job",
                                  "namespace": "default"}]})
        if c % 20 == 0:
            crbs.append({"apiVersion": rbac + "/v1", "kind": "ClusterRoleBinding",
                         "metadata": k8s_meta(rng, "anonymous-view", now),
                         "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "view"},
                         "subjects": [{"apiGroup": rbac, "kind": "User",
                                       "name": "system:anonymous"}]})
        for what, items in (("serviceaccounts", sas), ("secrets", secrets),
                            ("clusterroles", roles), ("clusterrolebindings", crbs),
                            ("rolebindings", rbs)):
            total += write_json(os.path.join(d, "%s-%s.json" % (cluster, what)), k8s_list(items),
                                4)
    return {"clusters": n, "service_accounts_per_cluster": ids, "files": 5 * n, "bytes": total}


def main():
    ap = argparse.ArgumentParser(description="Write a synthetic estate for `ferry audit`.")
    ap.add_argument("-o", "--out", default="audit-estate", help="output directory")
    ap.add_argument("-s", "--scale", type=float, default=1.0,
                    help="multiplies the 1000 accounts/projects/subscriptions/clusters")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--roles", type=int, default=500, help="identities per unit (500)")
    ap.add_argument("--clouds", default="aws,gcp,azure,k8s")
    ap.add_argument("--now", type=int, default=DEFAULT_NOW,
                    help="the clock dates are relative to (give ferry audit the same --now)")
    args = ap.parse_args()
    n = max(1, int(round(1000 * args.scale)))
    clouds = [c for c in args.clouds.split(",") if c]
    gens = {"aws": gen_aws, "gcp": gen_gcp, "azure": gen_azure, "k8s": gen_k8s}
    for c in clouds:
        if c not in gens:
            ap.error("unknown cloud %r" % c)
    os.makedirs(args.out, exist_ok=True)
    summary = {"seed": args.seed, "scale": args.scale, "units": n, "identities": args.roles,
               "now": args.now, "clouds": {}}
    for c in clouds:
        t0 = time.time()
        summary["clouds"][c] = gens[c](args.out, n, args.seed, args.roles, args.now)
        print("gen-audit-estate: %s: %s (%.0f s)" % (c, summary["clouds"][c], time.time() - t0),
              file=sys.stderr)
    with open(os.path.join(args.out, "estate.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
