# Copyright (c) kiln developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to kiln.flatcar. It can change at any time. Do not use it from other collections.

"""kiln.flatcar.publish backend ``s3``: any S3-compatible bucket, keys mirroring the directory layout.

S3 has no multi-object atomicity: objects go to the staging prefix, are verified there, copied to the
version prefix (version.txt last) and only then does the ``current`` object move.
"""

from __future__ import annotations

import hashlib
import re
import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.kiln.flatcar.plugins.module_utils._pub_backends import Backend
from ansible_collections.kiln.flatcar.plugins.module_utils._pub_manifest import Layout, PublishError, content_type, join_key

BOTO_IMPORT_ERROR = None
try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError:  # pragma: no cover - depends on the target
    boto3 = None
    BOTO_IMPORT_ERROR = traceback.format_exc()

NOT_FOUND = ("404", "NoSuchKey", "NotFound")
CURRENT_RE = re.compile(r"^[A-Za-z0-9._+-]+$")


def check_prefix(value, what):
    if value is None:
        return None
    if "\0" in value or ".." in value.split("/"):
        raise PublishError("%s must be a key prefix without '..', not %r" % (what, value))
    return value


class S3Backend(Backend):
    """An S3-compatible bucket."""

    kind = "s3"
    join = staticmethod(join_key)

    @classmethod
    def make_layout(cls, opts, board, version, files):
        return Layout.build(cls.join, check_prefix(opts["base"], "base"), check_prefix(opts["update_base"], "update_base"),
                            board, version, files)

    def __init__(self, layout, opts, runner, workdir):
        Backend.__init__(self, layout, opts, runner, workdir)
        if boto3 is None:
            raise PublishError(missing_required_lib("boto3"), exception=BOTO_IMPORT_ERROR)
        if not opts["bucket"]:
            raise PublishError("backend s3 needs bucket")
        self.bucket = opts["bucket"]
        style = opts["s3_addressing_style"] or ("path" if opts["endpoint_url"] else "auto")
        cfg = botocore.config.Config(s3={"addressing_style": style}, retries={"max_attempts": 5, "mode": "standard"})
        kwargs = {"region_name": opts["region"], "config": cfg, "verify": opts["validate_certs"]}
        if opts["endpoint_url"]:
            kwargs["endpoint_url"] = opts["endpoint_url"]
        if opts["access_key"]:
            kwargs["aws_access_key_id"] = opts["access_key"]
            kwargs["aws_secret_access_key"] = opts["secret_key"]
        if opts["session_token"]:
            kwargs["aws_session_token"] = opts["session_token"]
        try:
            self.s3 = boto3.client("s3", **kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            raise PublishError("cannot create the S3 client: %s" % exc)
        self.content = opts["s3_verify"] == "content"

    def describe(self):
        return "s3://%s/%s" % (self.bucket, (self.layout.base or "").strip("/"))

    def _err(self, what, exc):
        raise PublishError("%s failed on s3://%s: %s" % (what, self.bucket, exc))

    def key(self, kind, f):
        return join_key(self.layout.final(f.area) if kind == "final" else self.layout.staging(f.area), f.name)

    def head(self, key):
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in NOT_FOUND:
                return None
            self._err("HEAD %s" % key, exc)
        except botocore.exceptions.BotoCoreError as exc:
            self._err("HEAD %s" % key, exc)
        return None

    def object_sha256(self, key):
        h = hashlib.sha256()
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            for chunk in iter(lambda: body.read(1024 * 1024), b""):
                h.update(chunk)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            self._err("GET %s" % key, exc)
        return h.hexdigest()

    def check(self, key, f, content=None):
        head = self.head(key)
        if head is None:
            return "missing"
        if int(head.get("ContentLength", -1)) != f.size:
            return "size"
        meta = (head.get("Metadata") or {}).get("sha256")
        if meta and meta != f.sha256:
            return "sha256"
        if (self.content if content is None else content) or not meta:
            if self.object_sha256(key) != f.sha256:
                return "sha256"
        return "ok"

    def read_current(self):
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self.layout.current)
            return obj["Body"].read().decode("utf-8", "replace").strip() or None
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in NOT_FOUND:
                return None
            self._err("GET current", exc)
        except botocore.exceptions.BotoCoreError as exc:
            self._err("GET current", exc)
        return None

    def inspect(self, prepare):
        areas = {}
        for f in self.layout.files:
            area = areas.setdefault(f.area, {"final_exists": True, "final": {}, "staging": {}, "extra": []})
            area["final"][f.name] = self.check(self.key("final", f), f)
        current = self.read_current()
        if current and not CURRENT_RE.match(current):
            return {"areas": areas, "current": current, "current_kind": "other"}
        return {"areas": areas, "current": current, "current_kind": "symlink" if current else "missing"}

    def transfer(self, pending):
        for f in pending:
            key = self.key("staging", f)
            head = self.head(key)
            if head is not None and int(head.get("ContentLength", -1)) == f.size and (head.get("Metadata") or {}).get("sha256") == f.sha256:
                continue
            self.runner.note("upload %s -> s3://%s/%s" % (f.name, self.bucket, key))
            try:
                self.s3.upload_file(f.source, self.bucket, key, ExtraArgs={"Metadata": {"sha256": f.sha256}, "ContentType": content_type(f.name)})
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, boto3.exceptions.S3UploadFailedError, OSError) as exc:
                raise PublishError("upload of %s to s3://%s/%s failed: %s; nothing was made visible, rerun to resume"
                                   % (f.name, self.bucket, key, exc))

    def commit(self, pending):
        bad = [f for f in pending if self.check(self.key("staging", f), f, content=True) != "ok"]
        if bad:
            for f in bad:
                self._delete(self.key("staging", f))
            raise PublishError("staged objects do not match the build record: %s; nothing was made visible, rerun to send them again"
                               % ", ".join(f.name for f in bad))
        last = [f for f in pending if f.area == "release" and f.name == "version.txt"]
        ordered = [f for f in pending if f.area == "update"] + [f for f in pending if f.area == "release" and f not in last] + last
        for f in ordered:
            src, dst = self.key("staging", f), self.key("final", f)
            if self.head(dst) is not None:
                raise PublishError("version uniqueness: s3://%s/%s appeared while publishing: rerun" % (self.bucket, dst))
            try:
                self.s3.copy({"Bucket": self.bucket, "Key": src}, self.bucket, dst, ExtraArgs={"MetadataDirective": "COPY"})
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                self._err("copy %s -> %s" % (src, dst), exc)
            if self.check(dst, f, content=False) != "ok":
                raise PublishError("s3://%s/%s does not match the build record after the copy" % (self.bucket, dst))
        for f in ordered:
            self._delete(self.key("staging", f))
        return {}

    def _delete(self, key):
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            self._err("DELETE %s" % key, exc)

    def verify(self):
        problems = []
        for f in self.layout.files:
            state = self.check(self.key("final", f), f)
            if state != "ok":
                problems.append("s3://%s/%s: %s" % (self.bucket, self.key("final", f), {
                    "sha256": "content differs from the build record", "size": "size differs from the build record"}.get(state, state)))
        return {"checked": len(self.layout.files), "problems": problems, "current": self.read_current()}

    def set_current(self, expect):
        now = self.read_current()
        if now != expect:
            raise PublishError("s3://%s/%s changed while publishing (now %s, expected %s): rerun" % (self.bucket, self.layout.current, now, expect))
        vt = self.layout.version_txt()
        try:
            if vt is not None:
                with open(vt.source, "rb") as fh:
                    body = fh.read()
                self.s3.put_object(Bucket=self.bucket, Key=join_key(self.layout.current, "version.txt"), Body=body, ContentType="text/plain",
                                   CacheControl="no-cache", Metadata={"sha256": hashlib.sha256(body).hexdigest()})
            self.s3.put_object(Bucket=self.bucket, Key=self.layout.current, Body=(self.layout.version + "\n").encode(),
                               ContentType="text/plain", CacheControl="no-cache")
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, OSError) as exc:
            self._err("writing current", exc)
        return {"before": expect, "after": self.layout.version, "changed": True}
