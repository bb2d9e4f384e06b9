#!/usr/bin/python3
"""An emulator of the Kubernetes API server's REST, list and watch protocol, for sluice's tests.

No real API server can run on the test machines, so this module plays one: real paths, real JSON,
real status codes and the real list/watch semantics, for the kinds an ingress controller reads
and writes.  It runs in a background thread inside pytest (`KubeAPIServer`) or as a process
(`/usr/bin/python3 e2e/kube/apiserver.py --listen 127.0.0.1:6443 --tls ...`).

Resources (group/version, plural, scope)::

    v1                        namespaces (cluster), services, endpoints, secrets, configmaps
    networking.k8s.io/v1      ingresses (+ /status), ingressclasses (cluster)
    discovery.k8s.io/v1       endpointslices
    coordination.k8s.io/v1    leases

plus discovery (`/api`, `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`),
`/version`, `/healthz`, `/livez`, `/readyz`.

What is emulated
----------------
* Storage: one global resourceVersion (an etcd revision: a string of an integer) bumped by every
  create, update and delete of any kind.  Objects get `metadata.uid`, `creationTimestamp`,
  `resourceVersion` and, for the kinds whose real strategy sets it (Ingress, IngressClass,
  EndpointSlice), `generation` (bumped when anything but metadata and status changes).  An update
  that changes nothing is a no-op, as in etcd: same resourceVersion, no watch event.
  Defaulting as the real server does it for the fields a controller reads: Service type,
  clusterIP(s) (allocated from 10.96.0.0/12, just strings), ports' protocol and targetPort;
  EndpointSlice ports' protocol; Secret type and `stringData` folded into base64 `data`;
  Namespace `kubernetes.io/metadata.name` label, finalizer and phase; Ingress status reset on
  create.  A light validation (names, Ingress paths/backends, TLS Secrets, EndpointSlice
  address types, Service ports) answers 422 Invalid with real field paths.
* Ordering and bodies: JSON as the Go server writes it: compact, HTML characters escaped
  (`\\u003c`, `\\u003e`, `\\u0026`), a trailing newline.  GET and watch objects carry kind and
  apiVersion; items of a List do not (as with typed lists from the real server); the List has
  `kind: <Kind>List`, `apiVersion`, `metadata.resourceVersion`, and `metadata.continue` plus
  `metadata.remainingItemCount` when there is more.  Items come in etcd key order
  (namespace, then name).
* LIST: cluster-wide and per namespace; `labelSelector` (`a=b`, `a==b`, `a!=b`, `a`, `!a`,
  `a in (x,y)`, `a notin (x,y)`, `a>1`, `a<1`); `fieldSelector` (`=`, `==`, `!=` on
  metadata.name, metadata.namespace, and `type` for Secrets, `status.phase` for Namespaces,
  `spec.clusterIP`/`spec.type` for Services; others are 400 "field label not supported").
  `limit`/`continue` pagination is a consistent snapshot at the first page's resourceVersion
  (MVCC emulated by undoing the event history); the token is the real format (base64url of
  `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\\u0000"}`).  A token whose revision has been
  compacted is 410 Expired, with an "inconsistent" continue token (rv -1) in the Status.
  `resourceVersion`/`resourceVersionMatch`: unset = consistent read of the latest; `0` = any
  (served "from the watch cache": the limit is ignored and the whole list comes back, like the
  classic real server); `N` + NotOlderThan = latest, after waiting up to 3 s for N to exist
  (else 504 "Too large resource version"); `N` + Exact (or `N` with a limit and no match, the
  legacy rule) = the snapshot at N, 410 Expired if compacted.
* WATCH (`?watch=1|true`, also the deprecated `/watch/` path prefix and a watch on a single
  object's path): an HTTP/1.1 chunked stream of `{"type":...,"object":...}\\n`, one event per
  chunk.  No resourceVersion or `0`: synthetic ADDED events for the current state first.  `N`:
  the events after N from the history; N older than the history gives one ERROR event with a
  410 Expired Status ("too old resource version: N (M)") and the stream ends; N newer than the
  store waits up to 3 s, then an ERROR with 504.  Selectors apply as in the watch cache: an
  object that stops matching is sent as DELETED, one that starts matching as ADDED.  DELETED
  objects carry the deletion's resourceVersion.  `allowWatchBookmarks=true`: BOOKMARK events
  every `bookmark_interval` seconds and about 2 s before the watch times out, objects with only
  kind, apiVersion and metadata.resourceVersion.  `timeoutSeconds` ends the stream cleanly
  (terminating chunk, connection kept alive); without it the watch lasts a random 1-2x
  `min_request_timeout` (1800 s by default).  `sendInitialEvents=true` (needs
  allowWatchBookmarks and resourceVersionMatch=NotOlderThan) sends the state as ADDED events
  then a BOOKMARK annotated `k8s.io/initial-events-end: "true"`.  A watcher that falls behind
  the retained history is closed, as the real cacher does.
* Writes: POST (201; 409 AlreadyExists; `generateName`; 404 when the namespace does not
  exist), PUT (optimistic concurrency: a stale metadata.resourceVersion is 409 Conflict; no
  resourceVersion = unconditional; 404 unless the kind allows create-on-update, i.e.
  Endpoints), PATCH (`application/merge-patch+json`; `application/strategic-merge-patch+json`
  = merge patch plus the merge keys of these kinds (Service ports by port, ownerReferences by
  uid, finalizers as a set) and `$patch`/`$deleteFromPrimitiveList` directives;
  `application/json-patch+json` (RFC 6902); `application/apply-patch+yaml` = create-or-merge,
  without field ownership), DELETE (a Success Status; with finalizers the object gets a
  deletionTimestamp and is removed when its last finalizer goes; preconditions; deleting a
  Namespace deletes its contents), DELETE on a collection, `dryRun=All`.  `/status` (Ingress,
  Service, Namespace): PUT/PATCH there change only status, and the main resource ignores status.
* Errors are real Status objects (`kind: Status`, `apiVersion: v1`, `status: Failure`,
  `message`, `reason`, `details`, `code`) with the real messages for NotFound, AlreadyExists,
  Conflict, Invalid, Expired, Unauthorized, Forbidden, MethodNotAllowed, BadRequest.
* Auth: `Authorization: Bearer <token>`; missing or wrong is 401 (with `anonymous=True` a
  request without a token is `system:anonymous`: 403 except /version and the health paths).
  Tokens can be changed at runtime (`set_token`, or a token file re-read when it changes).
  `forbid(verb, resource)` makes RBAC-style 403s.
* TLS: a CA and a serving certificate (SANs localhost, 127.0.0.1, ::1, kubernetes.default.svc...)
  made with the openssl CLI in the state directory (`ca.crt`), kept across restarts; or plain
  HTTP.  The state directory also gets a `kubeconfig` and a `serviceaccount/` directory
  (token, ca.crt, namespace) laid out as in a pod.

Control for tests (see `KubeAPIServer`): direct writes that produce the same watch events as
API writes, `compact(rv)`, `close_watches()`, `restart()`, `fail_next()` (the next matching
request fails with a given code, or is delayed, or its watch stream carries a bad line),
`inject_watch_line()`, `watch_chunk_size` (split events across chunks), a request log, and
`wait_for_watch()`.  In CLI mode the same controls are POST endpoints under `/_emulator/`.

Limits and deviations
---------------------
No HTTP/2, no protobuf or Table output (JSON is always served), no managedFields or field
ownership, no admission beyond namespace existence, no RBAC beyond `forbid`, no client-cert
authentication, no aggregated discovery (clients fall back to the legacy documents), no OpenAPI.
Unknown fields are kept instead of pruned.  Validation is a subset.  Watch-cache and etcd are one
store here: one global history (`history_limit` events, plus `compact()`), not one cache per
resource.  Namespace deletion happens at once (MODIFIED to Terminating, its contents DELETED, then
the Namespace DELETED) instead of being driven by a controller.  Services get no real network.
Bulk loads (`create_many`, `load`, `--load`) call gc.freeze() so that the collector does not
stall requests; that is process-wide.
"""

import argparse
import base64
import bisect
import collections
import gc
import json
import marshal
import os
import random
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

try:
    import yaml
except ImportError:  # YAML bodies and manifests need python3-yaml; JSON works without it
    yaml = None

__all__ = ["KubeAPIServer", "APIError", "RESOURCES", "resource_type", "load_manifests"]

K8S_VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0",
               "gitCommit": "7c48c2bd72b9bf5c44d21d7338cc7bea77d0ad2a", "gitTreeState": "clean",
               "buildDate": "2024-04-17T17:27:03Z", "goVersion": "go1.22.2", "compiler": "gc",
               "platform": "linux/amd64"}
TOO_LARGE_RV_WAIT = 3.0  # how long the real server waits for a future resourceVersion


# ---------------------------------------------------------------------------------------------
# Resource types
# ---------------------------------------------------------------------------------------------

class ResourceType:
    """One REST resource: its group/version/kind, plural, scope and the strategy details that
    change what the server does with it."""

    def __init__(self, group, version, kind, plural, singular, namespaced, short_names=(),
                 status=False, generation=False, create_on_update=False, fields=(),
                 categories=(), smp_keys=None):
        self.group = group
        self.version = version
        self.kind = kind
        self.plural = plural
        self.singular = singular
        self.namespaced = namespaced
        self.short_names = list(short_names)
        self.status = status                      # has a /status subresource
        self.generation = generation              # strategy maintains metadata.generation
        self.create_on_update = create_on_update  # PUT may create
        self.fields = ("metadata.name", "metadata.namespace") + tuple(fields) \
            if namespaced else ("metadata.name",) + tuple(fields)
        self.categories = list(categories)
        self.smp_keys = {**SMP_COMMON_KEYS, **(smp_keys or {})}
        self.api_version = f"{group}/{version}" if group else version
        self.list_kind = kind + "List"
        self.qualified = f"{plural}.{group}" if group else plural  # as in error messages
        self.group_kind = f"{kind}.{group}" if group else kind      # as in Invalid messages

    def __repr__(self):
        return f"<ResourceType {self.qualified}>"

    def details(self, name=None):
        d = {}
        if name is not None:
            d["name"] = name
        if self.group:
            d["group"] = self.group
        d["kind"] = self.plural
        return d


# Strategic merge patch: list fields merged by key rather than replaced (None = set of scalars).
SMP_COMMON_KEYS = {("metadata", "ownerReferences"): "uid", ("metadata", "finalizers"): None}

RESOURCES = [
    ResourceType("", "v1", "Namespace", "namespaces", "namespace", False, ["ns"], status=True,
                 fields=("status.phase",)),
    ResourceType("", "v1", "Service", "services", "service", True, ["svc"], status=True,
                 fields=("spec.clusterIP", "spec.type"), categories=["all"],
                 smp_keys={("spec", "ports"): "port"}),
    ResourceType("", "v1", "Endpoints", "endpoints", "endpoints", True, ["ep"],
                 create_on_update=True),
    ResourceType("", "v1", "Secret", "secrets", "secret", True, fields=("type",)),
    ResourceType("", "v1", "ConfigMap", "configmaps", "configmap", True, ["cm"]),
    ResourceType("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", True, ["ing"],
                 status=True, generation=True),
    ResourceType("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass",
                 False, generation=True),
    ResourceType("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice",
                 True, generation=True),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", "lease", True),
]
_BY_GVR = {(r.group, r.version, r.plural): r for r in RESOURCES}
GROUPS = collections.OrderedDict()
for _r in RESOURCES:
    GROUPS.setdefault(_r.group, []).append(_r)


def resource_type(what):
    """The ResourceType for a kind ("Ingress"), plural ("ingresses"), short name ("ing"),
    "plural.group" or "apiVersion/Kind"; a ResourceType is returned as is."""
    if isinstance(what, ResourceType):
        return what
    w = str(what)
    for r in RESOURCES:
        if w in (r.kind, r.plural, r.singular, r.qualified, f"{r.api_version}/{r.kind}") \
                or w in r.short_names or w.lower() in (r.kind.lower(), r.plural):
            return r
    raise KeyError(f"unknown resource {what!r}")


def _rt_for_object(obj):
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    for r in RESOURCES:
        if r.kind == kind and (api_version is None or r.api_version == api_version):
            return r
    raise KeyError(f"unknown kind {api_version}/{kind}")


# ---------------------------------------------------------------------------------------------
# JSON helpers
# ---------------------------------------------------------------------------------------------

def jcopy(o):
    """A deep copy of JSON data (marshal runs in C: much faster than copy.deepcopy)."""
    try:
        return marshal.loads(marshal.dumps(o))
    except ValueError:  # not plain JSON data (e.g. a tuple inside): the slow way
        if isinstance(o, dict):
            return {k: jcopy(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [jcopy(v) for v in o]
        return o


_GO_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
               ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def go_json(o):
    """JSON bytes as Go's encoding/json writes them: compact, UTF-8, HTML characters escaped."""
    s = json.dumps(o, separators=(",", ":"), ensure_ascii=False)
    for a, b in _GO_ESCAPES:
        if a in s:
            s = s.replace(a, b)
    return s.encode("utf-8")


def now_rfc3339():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_META_ORDER = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
               "generation", "creationTimestamp", "deletionTimestamp",
               "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
               "finalizers", "managedFields")


def _canonical(rt, obj):
    """Field order as the Go structs have it: kind, apiVersion, metadata, ..., status."""
    out = {"kind": rt.kind, "apiVersion": rt.api_version}
    md = obj.get("metadata") or {}
    m = {k: md[k] for k in _META_ORDER if k in md}
    for k, v in md.items():
        if k not in m:
            m[k] = v
    out["metadata"] = m
    for k, v in obj.items():
        if k not in ("kind", "apiVersion", "metadata", "status"):
            out[k] = v
    if "status" in obj:
        out["status"] = obj["status"]
    return out


# ---------------------------------------------------------------------------------------------
# Errors as Status objects
# ---------------------------------------------------------------------------------------------

class APIError(Exception):
    """A failure answered with a metav1.Status body."""

    def __init__(self, code, reason, message, details=None, headers=None, list_meta=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}
        self.list_meta = list_meta or {}

    def status(self):
        s = {"kind": "Status", "apiVersion": "v1", "metadata": dict(self.list_meta),
             "status": "Failure", "message": self.message}
        if self.reason:
            s["reason"] = self.reason
        if self.details:
            s["details"] = self.details
        s["code"] = self.code
        return s

    @classmethod
    def not_found(cls, rt, name):
        return cls(404, "NotFound", f'{rt.qualified} "{name}" not found', rt.details(name))

    @classmethod
    def already_exists(cls, rt, name):
        return cls(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists',
                   rt.details(name))

    @classmethod
    def conflict(cls, rt, name, why="the object has been modified; please apply your changes "
                                    "to the latest version and try again"):
        return cls(409, "Conflict", f'Operation cannot be fulfilled on {rt.qualified} "{name}": '
                                    f"{why}", rt.details(name))

    @classmethod
    def invalid(cls, rt, name, causes):
        """causes: [(field, reason, message)] as field.Error, e.g.
        ("spec.rules[0].host", "FieldValueInvalid", 'Invalid value: "x": ...')."""
        msgs = [f"{f}: {m}" for f, _, m in causes]
        text = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
        det = {"name": name or ""}
        if rt.group:
            det["group"] = rt.group
        det["kind"] = rt.kind
        det["causes"] = [{"reason": r, "message": m, "field": f} for f, r, m in causes]
        return cls(422, "Invalid", f'{rt.group_kind} "{name or ""}" is invalid: {text}', det)

    @classmethod
    def bad_request(cls, message):
        return cls(400, "BadRequest", message)

    @classmethod
    def expired(cls, message, list_meta=None):
        return cls(410, "Expired", message, list_meta=list_meta)

    @classmethod
    def internal(cls, message):
        return cls(500, "InternalError", f"Internal error occurred: {message}",
                   {"causes": [{"message": message}]})

    @classmethod
    def too_large_rv(cls, rv, current):
        return cls(504, "Timeout", f"Too large resource version: {rv}, current: {current}",
                   {"causes": [{"reason": "ResourceVersionTooLarge",
                                "message": "Too large resource version"}],
                    "retryAfterSeconds": 1})


def _invalid_list_options(msg_field, reason, msg):
    return APIError(422, "Invalid", f'ListOptions.meta.k8s.io "" is invalid: {msg_field}: {msg}',
                    {"group": "meta.k8s.io", "kind": "ListOptions",
                     "causes": [{"reason": reason, "message": msg, "field": msg_field}]})


# ---------------------------------------------------------------------------------------------
# Selectors
# ---------------------------------------------------------------------------------------------

_LKEY = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LVAL = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_RX_NOT_EXISTS = re.compile(rf"^\s*!\s*({_LKEY})\s*$")
_RX_SET = re.compile(rf"^\s*({_LKEY})\s+(in|notin)\s*\((.*)\)\s*$")
_RX_OP = re.compile(rf"^\s*({_LKEY})\s*(==|=|!=|>|<)\s*(\S*?)\s*$")
_RX_EXISTS = re.compile(rf"^\s*({_LKEY})\s*$")
_RX_VAL = re.compile(rf"^{_LVAL}$")


class LabelSelector:
    """A parsed labelSelector; `matches(labels)`."""

    def __init__(self, text):
        self.text = text or ""
        self.reqs = []
        for part in self._split(self.text):
            if not part.strip():
                if self.text.strip():
                    raise self._error(part, "found '', expected: identifier")
                continue
            self.reqs.append(self._parse(part))

    @staticmethod
    def _split(text):
        parts, depth, cur = [], 0, []
        for ch in text:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append("".join(cur))
                cur = []
            else:
                cur.append(ch)
        parts.append("".join(cur))
        return parts if text.strip() else []

    @staticmethod
    def _error(part, why):
        return APIError.bad_request(f"unable to parse requirement: {why} (in {part.strip()!r})")

    def _value(self, part, v):
        if not _RX_VAL.match(v) or len(v) > 63:
            raise self._error(part, f"invalid label value: {v!r}")
        return v

    def _parse(self, part):
        m = _RX_NOT_EXISTS.match(part)
        if m:
            return (m.group(1), "!", ())
        m = _RX_SET.match(part)
        if m:
            vals = [v.strip() for v in m.group(3).split(",")]
            if vals == [""]:
                raise self._error(part, "for 'in', 'notin' operators, values set can't be empty")
            return (m.group(1), m.group(2), tuple(self._value(part, v) for v in vals))
        m = _RX_OP.match(part)
        if m:
            key, op, val = m.group(1), m.group(2), m.group(3)
            if op in (">", "<"):
                try:
                    return (key, op, (int(val),))
                except ValueError:
                    raise self._error(part, f"for 'Gt', 'Lt' operators, the value must be an "
                                            f"integer: {val!r}")
            return (key, "=" if op == "==" else op, (self._value(part, val),))
        m = _RX_EXISTS.match(part)
        if m:
            return (m.group(1), "exists", ())
        raise self._error(part, "found unexpected token")

    def empty(self):
        return not self.reqs

    def matches(self, labels):
        labels = labels or {}
        for key, op, vals in self.reqs:
            has = key in labels
            v = labels.get(key)
            if op == "=":
                ok = has and v == vals[0]
            elif op == "!=":
                ok = not has or v != vals[0]
            elif op == "in":
                ok = has and v in vals
            elif op == "notin":
                ok = not has or v not in vals
            elif op == "exists":
                ok = has
            elif op == "!":
                ok = not has
            else:
                try:
                    n = int(v) if has else None
                except ValueError:
                    n = None
                ok = n is not None and (n > vals[0] if op == ">" else n < vals[0])
            if not ok:
                return False
        return True


def _field_value(obj, field):
    cur = obj
    for p in field.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    return "" if cur is None else str(cur)


class FieldSelector:
    """A parsed fieldSelector for one resource type; `matches(obj)`."""

    def __init__(self, text, rt):
        self.text = text or ""
        self.reqs = []
        for term in self._split(self.text):
            m = re.match(r"^((?:[^=!\\]|\\.)*)(==|=|!=)(.*)$", term)
            if not m:
                raise APIError.bad_request(f"invalid selector: '{self.text}'; can't understand "
                                           f"'{term}'")
            key, op, val = self._unescape(m.group(1)), m.group(2), self._unescape(m.group(3))
            if key not in rt.fields:
                raise APIError.bad_request(f'field label not supported: {key}')
            self.reqs.append((key, "!=" if op == "!=" else "=", val))

    @staticmethod
    def _split(text):
        out, cur, esc = [], [], False
        for ch in text:
            if esc:
                cur.append("\\" + ch)
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == ",":
                out.append("".join(cur))
                cur = []
            else:
                cur.append(ch)
        out.append("".join(cur))
        return [t for t in out if t]

    @staticmethod
    def _unescape(s):
        return re.sub(r"\\(.)", r"\1", s)

    def empty(self):
        return not self.reqs

    def matches(self, obj):
        for key, op, val in self.reqs:
            got = _field_value(obj, key)
            if (got == val) != (op == "="):
                return False
        return True

    def names(self):
        """The metadata.name this selector pins, if any (for single-object watches)."""
        for key, op, val in self.reqs:
            if key == "metadata.name" and op == "=":
                return val
        return None


class _Filter:
    """Namespace + label selector + field selector, applied to stored objects."""

    def __init__(self, rt, ns=None, label_selector="", field_selector=""):
        self.rt = rt
        self.ns = ns if rt.namespaced else None
        self.labels = label_selector if isinstance(label_selector, LabelSelector) \
            else LabelSelector(label_selector)
        self.fields = field_selector if isinstance(field_selector, FieldSelector) \
            else FieldSelector(field_selector, rt)

    def has_selectors(self):
        return not (self.labels.empty() and self.fields.empty())

    def matches(self, stored):
        if self.ns is not None and stored.ns != self.ns:
            return False
        md = stored.obj.get("metadata") or {}
        return self.labels.matches(md.get("labels")) and self.fields.matches(stored.obj)


# ---------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------

def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return jcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


_DELETE = object()


def strategic_merge_patch(target, patch, keys, path=()):
    """A strategic merge patch: a merge patch whose lists listed in `keys` (path tuple -> merge
    key, or None for a set of scalars) are merged element-wise; honours `$patch: replace|delete`
    and `$deleteFromPrimitiveList/<field>`; other `$` directives are dropped."""
    if not isinstance(patch, dict):
        return jcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return {k: jcopy(v) for k, v in patch.items() if not k.startswith("$")}
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$deleteFromPrimitiveList/"):
            f = k.split("/", 1)[1]
            if isinstance(out.get(f), list):
                out[f] = [x for x in out[f] if x not in (v or [])]
            continue
        if k.startswith("$"):
            continue
        sub = path + (k,)
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            r = strategic_merge_patch(out.get(k), v, keys, sub)
            if r is _DELETE:
                out.pop(k, None)
            else:
                out[k] = r
        elif isinstance(v, list) and sub in keys:
            out[k] = _smp_list(out.get(k) if isinstance(out.get(k), list) else [], v,
                               keys[sub], keys, sub)
        else:
            out[k] = jcopy(v)
    return out


def _smp_list(cur, patch, key, keys, path):
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [jcopy(e) for e in patch if not (isinstance(e, dict) and "$patch" in e)]
    out = [jcopy(e) for e in cur]
    if key is None:
        for e in patch:
            if e not in out:
                out.append(jcopy(e))
        return out
    for e in patch:
        if not isinstance(e, dict):
            continue
        kv = e.get(key)
        idx = next((i for i, c in enumerate(out) if isinstance(c, dict) and c.get(key) == kv),
                   None)
        if e.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
        elif idx is not None:
            out[idx] = strategic_merge_patch(out[idx], e, keys, path)
        else:
            out.append({k: jcopy(v) for k, v in e.items() if not k.startswith("$")})
    return out


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise APIError(422, "Invalid", f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc, ops):
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise APIError.bad_request("json patch must be a list of operations")
    doc = jcopy(doc)

    def walk(d, parts):
        for p in parts:
            if isinstance(d, list):
                try:
                    d = d[int(p)]
                except (ValueError, IndexError):
                    raise APIError(422, "Invalid", f"jsonpatch: index {p!r} out of range")
            elif isinstance(d, dict) and p in d:
                d = d[p]
            else:
                raise APIError(422, "Invalid", f"jsonpatch: missing path element {p!r}")
        return d

    def get(d, path):
        return walk(d, _pointer(path))

    def remove(d, path):
        parts = _pointer(path)
        parent = walk(d, parts[:-1])
        last = parts[-1]
        try:
            if isinstance(parent, list):
                return parent.pop(int(last))
            return parent.pop(last)
        except (KeyError, ValueError, IndexError):
            raise APIError(422, "Invalid", f"jsonpatch remove operation does not apply: doc is "
                                           f"missing path: {path!r}")

    def add(d, path, value):
        parts = _pointer(path)
        if not parts:
            return value
        parent = walk(d, parts[:-1])
        last = parts[-1]
        if isinstance(parent, list):
            if last == "-":
                parent.append(value)
            else:
                try:
                    i = int(last)
                    if i < 0 or i > len(parent):
                        raise ValueError
                except ValueError:
                    raise APIError(422, "Invalid", f"jsonpatch add: index {last!r} out of range")
                parent.insert(i, value)
        elif isinstance(parent, dict):
            parent[last] = value
        else:
            raise APIError(422, "Invalid", f"jsonpatch add: cannot add to {path!r}")
        return d

    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise APIError.bad_request(f"invalid json patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = add(doc, path, jcopy(op.get("value")))
        elif kind == "remove":
            remove(doc, path)
        elif kind == "replace":
            if _pointer(path):
                remove(doc, path)
            doc = add(doc, path, jcopy(op.get("value")))
        elif kind == "move":
            v = remove(doc, op["from"])
            doc = add(doc, path, v)
        elif kind == "copy":
            doc = add(doc, path, jcopy(get(doc, op["from"])))
        elif kind == "test":
            if get(doc, path) != op.get("value"):
                raise APIError(422, "Invalid", f"jsonpatch test operation does not apply: is "
                                               f"not equal to {op.get('value')!r} at {path!r}")
        else:
            raise APIError.bad_request(f"unexpected json patch operation {kind!r}")
    return doc


# ---------------------------------------------------------------------------------------------
# Defaulting and validation (the parts a controller depends on)
# ---------------------------------------------------------------------------------------------

_DNS1123_SUB = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_WILDCARD_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _validate_name(rt, name):
    if rt.kind == "Namespace":
        rx, n, what = _DNS1123_LABEL, 63, ("a lowercase RFC 1123 label must consist of lower case "
                                           "alphanumeric characters or '-', and must start and "
                                           "end with an alphanumeric character")
    elif rt.kind == "Service":
        rx, n, what = _DNS1035_LABEL, 63, ("a DNS-1035 label must consist of lower case "
                                           "alphanumeric characters or '-', start with an "
                                           "alphabetic character, and end with an alphanumeric "
                                           "character")
    else:
        rx, n, what = _DNS1123_SUB, 253, ("a lowercase RFC 1123 subdomain must consist of lower "
                                          "case alphanumeric characters, '-' or '.', and must "
                                          "start and end with an alphanumeric character")
    if len(name) > n:
        return [("metadata.name", "FieldValueInvalid",
                 f'Invalid value: "{name}": must be no more than {n} characters')]
    if not rx.match(name):
        return [("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {what}')]
    return []


def _port_errors(where, port):
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        return [(where, "FieldValueInvalid",
                 f"Invalid value: {json.dumps(port)}: must be between 1 and 65535, inclusive")]
    return []


def _validate_backend(where, b):
    errs = []
    if not isinstance(b, dict):
        return [(where, "FieldValueRequired", "Required value")]
    svc, res = b.get("service"), b.get("resource")
    if svc and res:
        errs.append((where, "FieldValueInvalid",
                     'Invalid value: "": cannot set both resource and service backends'))
    elif not svc and not res:
        errs.append((where, "FieldValueInvalid",
                     'Invalid value: "": one of service or resource is required'))
    elif svc:
        if not svc.get("name"):
            errs.append((f"{where}.service.name", "FieldValueRequired", "Required value"))
        port = svc.get("port") or {}
        if "number" in port and "name" in port and port.get("name") and port.get("number"):
            errs.append((f"{where}.service.port", "FieldValueInvalid",
                         'Invalid value: "": cannot set both port name & port number'))
        elif port.get("number") is not None and port.get("number") != 0:
            errs += _port_errors(f"{where}.service.port.number", port.get("number"))
        elif not port.get("name"):
            errs.append((f"{where}.service.port.name", "FieldValueRequired",
                         "Required value: port name or number is required"))
    return errs


def _validate_ingress(obj):
    spec = obj.get("spec") or {}
    errs = []
    rules = spec.get("rules") or []
    if not rules and not spec.get("defaultBackend"):
        errs.append(("spec", "FieldValueInvalid",
                     "Invalid value: ...: either `defaultBackend` or `rules` must be specified"))
    if spec.get("defaultBackend"):
        errs += _validate_backend("spec.defaultBackend", spec["defaultBackend"])
    for i, rule in enumerate(rules):
        host = rule.get("host")
        if host and not _WILDCARD_HOST.match(host):
            errs.append((f"spec.rules[{i}].host", "FieldValueInvalid",
                         f'Invalid value: "{host}": a wildcard DNS-1123 subdomain or a DNS-1123 '
                         f'subdomain is required'))
        http = rule.get("http")
        if http is None:
            continue
        paths = http.get("paths")
        if not paths:
            errs.append((f"spec.rules[{i}].http.paths", "FieldValueRequired", "Required value"))
            continue
        for j, p in enumerate(paths):
            w = f"spec.rules[{i}].http.paths[{j}]"
            pt = p.get("pathType")
            if not pt:
                errs.append((f"{w}.pathType", "FieldValueRequired",
                             "Required value: pathType must be specified"))
            elif pt not in ("Exact", "Prefix", "ImplementationSpecific"):
                errs.append((f"{w}.pathType", "FieldValueNotSupported",
                             f'Unsupported value: "{pt}": supported values: "Exact", '
                             f'"ImplementationSpecific", "Prefix"'))
            path = p.get("path", "")
            if pt in ("Exact", "Prefix") and not str(path).startswith("/"):
                errs.append((f"{w}.path", "FieldValueInvalid",
                             f'Invalid value: "{path}": must be an absolute path'))
            errs += _validate_backend(f"{w}.backend", p.get("backend"))
    for i, t in enumerate(spec.get("tls") or []):
        for j, h in enumerate(t.get("hosts") or []):
            if not _WILDCARD_HOST.match(str(h)):
                errs.append((f"spec.tls[{i}].hosts[{j}]", "FieldValueInvalid",
                             f'Invalid value: "{h}": a wildcard DNS-1123 subdomain or a DNS-1123 '
                             f'subdomain is required'))
    return errs


def _validate_service(obj):
    spec = obj.get("spec") or {}
    errs = []
    typ = spec.get("type", "ClusterIP")
    if typ not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errs.append(("spec.type", "FieldValueNotSupported",
                     f'Unsupported value: "{typ}": supported values: "ClusterIP", '
                     f'"ExternalName", "LoadBalancer", "NodePort"'))
    if typ == "ExternalName":
        if not spec.get("externalName"):
            errs.append(("spec.externalName", "FieldValueRequired", "Required value"))
    elif not spec.get("ports") and spec.get("clusterIP") != "None":
        errs.append(("spec.ports", "FieldValueRequired", "Required value"))
    for i, p in enumerate(spec.get("ports") or []):
        errs += _port_errors(f"spec.ports[{i}].port", p.get("port"))
        if len(spec.get("ports")) > 1 and not p.get("name"):
            errs.append((f"spec.ports[{i}].name", "FieldValueRequired", "Required value"))
    return errs


def _validate_secret(obj):
    errs = []
    data = obj.get("data") or {}
    for k, v in data.items():
        if not isinstance(v, str):
            errs.append((f"data[{k}]", "FieldValueInvalid", "Invalid value: must be a string"))
            continue
        try:
            base64.b64decode(v, validate=True)
        except (ValueError, TypeError):
            raise APIError.bad_request(f"Secret in version \"v1\" cannot be handled as a Secret: "
                                       f"illegal base64 data at input byte 0 (data[{k}])")
    if obj.get("type") == "kubernetes.io/tls":
        for k in ("tls.crt", "tls.key"):
            if k not in data:
                errs.append((f"data[{k}]", "FieldValueRequired", "Required value"))
    return errs


def _validate_slice(obj):
    errs = []
    at = obj.get("addressType")
    if not at:
        errs.append(("addressType", "FieldValueRequired", "Required value"))
    elif at not in ("IPv4", "IPv6", "FQDN"):
        errs.append(("addressType", "FieldValueNotSupported",
                     f'Unsupported value: "{at}": supported values: "FQDN", "IPv4", "IPv6"'))
    for i, ep in enumerate(obj.get("endpoints") or []):
        addrs = ep.get("addresses") or []
        if not addrs:
            errs.append((f"endpoints[{i}].addresses", "FieldValueRequired",
                         "Required value: must contain at least 1 address"))
        elif len(addrs) > 100:
            errs.append((f"endpoints[{i}].addresses", "FieldValueTooMany",
                         f"Too many: {len(addrs)}: must have at most 100 items"))
    for i, p in enumerate(obj.get("ports") or []):
        port = p.get("port")
        if port is not None and (not isinstance(port, int) or not 0 <= port <= 65535):
            errs.append((f"ports[{i}].port", "FieldValueInvalid",
                         f"Invalid value: {json.dumps(port)}: must be between 0 and 65535, "
                         f"inclusive"))
    return errs


_VALIDATORS = {"Ingress": _validate_ingress, "Service": _validate_service,
               "Secret": _validate_secret, "EndpointSlice": _validate_slice}


# ---------------------------------------------------------------------------------------------
# Store: objects, history, watches
# ---------------------------------------------------------------------------------------------

class Stored:
    """One stored version of an object.  The dict is never mutated once stored; its JSON
    encodings are computed once and shared by every response and watch event."""

    __slots__ = ("obj", "key", "ns", "name", "rv", "_full", "_item")

    def __init__(self, obj):
        md = obj["metadata"]
        self.obj = obj
        self.ns = md.get("namespace")
        self.name = md["name"]
        self.key = f"{self.ns}/{self.name}" if self.ns else self.name
        self.rv = int(md.get("resourceVersion") or 0)
        self._full = None
        self._item = None

    @property
    def full(self):
        """With kind and apiVersion (GET, watch)."""
        if self._full is None:
            self._full = go_json(self.obj)
        return self._full

    @property
    def item(self):
        """As an item of a typed List: without kind and apiVersion."""
        if self._item is None:
            self._item = go_json({k: v for k, v in self.obj.items()
                                  if k not in ("kind", "apiVersion")})
        return self._item

    def with_rv(self, rv):
        obj = dict(self.obj)
        obj["metadata"] = dict(obj["metadata"], resourceVersion=str(rv))
        return Stored(obj)


class Event:
    """One entry of the history: the object after the change (for DELETED: its last state,
    carrying the deletion's resourceVersion) and the version before."""

    __slots__ = ("rv", "type", "rt", "stored", "prev", "_wire")

    def __init__(self, rv, type_, rt, stored, prev):
        self.rv = rv
        self.type = type_
        self.rt = rt
        self.stored = stored
        self.prev = prev
        self._wire = None

    @property
    def key(self):
        return self.stored.key

    def wire(self):
        if self._wire is None:
            self._wire = _event_bytes(self.type, self.stored.full)
        return self._wire


def _event_bytes(type_, obj_bytes):
    return b'{"type":"' + type_.encode() + b'","object":' + obj_bytes + b"}\n"


class _WatchState:
    """An open watch, as seen by the controls (close_watches, inject_watch_line)."""

    def __init__(self, rt, ns, filt, conn, peer):
        self.rt = rt
        self.ns = ns
        self.filter = filt
        self.conn = conn
        self.peer = peer
        self.cancelled = False
        self.abrupt = False
        self.injected = collections.deque()
        self.started = time.time()
        self.pos = 0


class Store:
    """All objects, the global resourceVersion and the event history.  Every method that reads
    or writes takes `self.cond`; writers notify it and watch threads wait on it."""

    def __init__(self, history_limit=200_000, initial_rv=0):
        self.cond = threading.Condition(threading.RLock())
        self.rv = int(initial_rv)
        self.compacted = int(initial_rv)   # new watches/lists/continues need rv >= this
        self.trimmed = int(initial_rv)     # events with rv <= trimmed are physically gone
        self.objects = {rt: {} for rt in RESOURCES}
        self.log = []                      # Event, rv ascending
        self.log_rvs = []
        self.history_limit = history_limit
        self.watches = set()
        self._snapshots = collections.OrderedDict()
        self._next_ip = 1
        self._next_node_port = 30000

    # --- reading ---

    def current(self, rt, ns, name):
        key = f"{ns}/{name}" if rt.namespaced else name
        return self.objects[rt].get(key)

    def get(self, rt, ns, name):
        with self.cond:
            s = self.current(rt, ns, name)
        if s is None:
            raise APIError.not_found(rt, name)
        return s

    def snapshot(self, rt, at_rv):
        """(sorted keys, {key: Stored}) of a resource as it was at revision `at_rv`."""
        with self.cond:
            if at_rv < self.compacted:
                raise APIError.expired("The resourceVersion for the provided list is too old.")
            ck = (rt.plural, rt.group, at_rv)
            snap = self._snapshots.get(ck)
            if snap is not None:
                self._snapshots.move_to_end(ck)
                return snap
            d = dict(self.objects[rt])
            if at_rv < self.rv:
                i = len(self.log) - 1
                while i >= 0 and self.log[i].rv > at_rv:
                    ev = self.log[i]
                    if ev.rt is rt:
                        if ev.type == "ADDED":
                            d.pop(ev.key, None)
                        else:
                            d[ev.key] = ev.prev
                    i -= 1
            snap = (sorted(d), d)
            self._snapshots[ck] = snap
            while len(self._snapshots) > 16:
                self._snapshots.popitem(last=False)
            return snap

    def wait_for_rv(self, rv, timeout=None):
        """Waits (up to TOO_LARGE_RV_WAIT seconds) until the store reaches revision `rv`."""
        with self.cond:
            return self.cond.wait_for(lambda: self.rv >= rv,
                                      TOO_LARGE_RV_WAIT if timeout is None else timeout)

    def events_after(self, rv):
        """Events with rv > `rv`, or None when some of them were trimmed away."""
        with self.cond:
            if rv < self.trimmed:
                return None
            i = bisect.bisect_right(self.log_rvs, rv)
            return self.log[i:]

    # --- writing (callers hold self.cond) ---

    def _commit(self, rt, type_, obj, prev):
        self.rv += 1
        rv = self.rv
        if type_ == "DELETED":
            if obj is None:
                stored = prev.with_rv(rv)
            else:
                obj["metadata"]["resourceVersion"] = str(rv)
                stored = Stored(_canonical(rt, obj))
            del self.objects[rt][prev.key]
        else:
            obj["metadata"]["resourceVersion"] = str(rv)
            stored = Stored(_canonical(rt, obj))
            self.objects[rt][stored.key] = stored
        ev = Event(rv, type_, rt, stored, prev)
        self.log.append(ev)
        self.log_rvs.append(rv)
        if self.history_limit and len(self.log) > self.history_limit * 1.1:
            self._compact_to(self.log[len(self.log) - self.history_limit - 1].rv, protect=False)
        self.cond.notify_all()
        return ev

    def _compact_to(self, rv, protect=True):
        """Compacts to `rv`: new watches, lists and continue tokens older than it get 410.
        With `protect`, events that open watches have yet to deliver are kept for them (a
        compaction does not break a watch that is already running); without, watches that
        fall behind are closed, as the real cacher closes unresponsive watchers."""
        rv = min(int(rv), self.rv)
        if rv <= self.compacted:
            return self.compacted
        self.compacted = rv
        trim = rv
        if protect:
            for w in self.watches:
                trim = min(trim, w.pos)
        if trim > self.trimmed:
            i = bisect.bisect_right(self.log_rvs, trim)
            del self.log[:i]
            del self.log_rvs[:i]
            self.trimmed = trim
        for ck in [k for k in self._snapshots if k[2] < rv]:
            del self._snapshots[ck]
        self.cond.notify_all()
        return rv

    def compact(self, rv=None):
        with self.cond:
            return self._compact_to(self.rv if rv is None else rv)

    # --- defaulting ---

    def _default(self, rt, obj, old=None):
        k = rt.kind
        if k == "Service":
            spec = obj.setdefault("spec", {})
            typ = spec.setdefault("type", "ClusterIP")
            if typ != "ExternalName":
                if not spec.get("clusterIP"):
                    old_ip = ((old or {}).get("spec") or {}).get("clusterIP")
                    if old_ip:
                        spec["clusterIP"] = old_ip
                    else:
                        n = self._next_ip
                        self._next_ip += 1
                        spec["clusterIP"] = f"10.96.{(n >> 8) & 255}.{n & 255}"
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
                spec.setdefault("internalTrafficPolicy", "Cluster")
            spec.setdefault("sessionAffinity", "None")
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                if typ != "ExternalName" and "port" in p:
                    p.setdefault("targetPort", p["port"])
                if typ in ("NodePort", "LoadBalancer") and not p.get("nodePort"):
                    p["nodePort"] = self._next_node_port
                    self._next_node_port += 1
            obj.setdefault("status", {"loadBalancer": {}})
        elif k == "Secret":
            obj.setdefault("type", "Opaque")
            sd = obj.pop("stringData", None)
            if sd:
                data = obj.setdefault("data", {})
                for key, val in sd.items():
                    data[key] = base64.b64encode(str(val).encode()).decode()
        elif k == "EndpointSlice":
            for p in obj.get("ports") or []:
                p.setdefault("protocol", "TCP")
        elif k == "Endpoints":
            for s in obj.get("subsets") or []:
                for p in s.get("ports") or []:
                    p.setdefault("protocol", "TCP")
        elif k == "Namespace":
            md = obj["metadata"]
            md.setdefault("labels", {})["kubernetes.io/metadata.name"] = md["name"]
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {}).setdefault("phase", "Active")
        elif k == "Ingress":
            obj.setdefault("status", {"loadBalancer": {}})

    def _validate(self, rt, obj):
        errs = _validate_name(rt, obj["metadata"]["name"])
        v = _VALIDATORS.get(rt.kind)
        if v:
            errs += v(obj)
        if errs:
            raise APIError.invalid(rt, obj["metadata"]["name"], errs)

    # --- create / update / delete ---

    def _check_body(self, rt, body, ns, name=None):
        if not isinstance(body, dict):
            raise APIError.bad_request(f"the body of the request was not a {rt.kind} object")
        if body.get("kind") not in (None, "", rt.kind):
            raise APIError.bad_request(f"the kind in the data ({body.get('kind')}) does not match "
                                       f"the expected kind ({rt.kind})")
        if body.get("apiVersion") not in (None, "", rt.api_version):
            raise APIError.bad_request(f"the API version in the data ({body.get('apiVersion')}) "
                                       f"does not match the expected API version "
                                       f"({rt.api_version})")
        md = body.get("metadata")
        if md is None:
            md = {}
        if not isinstance(md, dict):
            raise APIError.bad_request("metadata must be an object")
        if rt.namespaced:
            if md.get("namespace") and ns and md["namespace"] != ns:
                raise APIError.bad_request("the namespace of the provided object does not match "
                                           "the namespace sent on the request")
        if name is not None and md.get("name") and md["name"] != name:
            raise APIError.bad_request(f"the name of the object ({md['name']}) does not match "
                                       f"the name on the URL ({name})")

    def create(self, rt, ns, body, dry_run=False, auto_namespace=False):
        self._check_body(rt, body, ns)
        obj = jcopy(body)
        md = obj.setdefault("metadata", {})
        if rt.namespaced:
            ns = ns or md.get("namespace") or "default"
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
        with self.cond:
            if not md.get("name"):
                if md.get("generateName"):
                    for _ in range(20):
                        cand = md["generateName"] + "".join(
                            random.choice(_NAME_ALPHABET) for _ in range(5))
                        if self.current(rt, ns, cand) is None:
                            break
                    md["name"] = cand
                else:
                    raise APIError.invalid(rt, "", [("metadata.name", "FieldValueRequired",
                                                     "Required value: name or generateName is "
                                                     "required")])
            if rt.namespaced and self.current(NAMESPACES, None, ns) is None:
                if auto_namespace:
                    self.create(NAMESPACES, None, {"metadata": {"name": ns}})
                else:
                    raise APIError.not_found(NAMESPACES, ns)
            if rt.namespaced:
                nsobj = self.current(NAMESPACES, None, ns)
                if nsobj and nsobj.obj["metadata"].get("deletionTimestamp"):
                    raise APIError(403, "Forbidden", f'{rt.qualified} "{md["name"]}" is '
                                                     f'forbidden: unable to create new content '
                                                     f'in namespace {ns} because it is being '
                                                     f'terminated', rt.details(md["name"]))
            if self.current(rt, ns, md["name"]) is not None:
                raise APIError.already_exists(rt, md["name"])
            for f in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "selfLink", "managedFields"):
                md.pop(f, None)
            md["uid"] = str(uuid.uuid4())
            md["creationTimestamp"] = now_rfc3339()
            if rt.generation:
                md["generation"] = 1
            else:
                md.pop("generation", None)
            if rt.kind == "Ingress":
                obj["status"] = {"loadBalancer": {}}
            self._default(rt, obj)
            self._validate(rt, obj)
            if dry_run:
                return Stored(_canonical(rt, obj))
            return self._commit(rt, "ADDED", obj, None).stored

    def update(self, rt, ns, name, body, subresource=None, dry_run=False):
        """PUT.  Returns (Stored, created)."""
        self._check_body(rt, body, ns, name)
        with self.cond:
            old = self.current(rt, ns, name)
            if old is None:
                if rt.create_on_update and subresource is None:
                    b = jcopy(body)
                    b.setdefault("metadata", {})["name"] = name
                    return self.create(rt, ns, b, dry_run), True
                raise APIError.not_found(rt, name)
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv not in (None, "") and str(want_rv) != old.obj["metadata"]["resourceVersion"]:
                raise APIError.conflict(rt, name)
            want_uid = (body.get("metadata") or {}).get("uid")
            if want_uid and want_uid != old.obj["metadata"]["uid"]:
                raise APIError.conflict(rt, name, f"Precondition failed: UID in precondition: "
                                                  f"{want_uid}, UID in object meta: "
                                                  f"{old.obj['metadata']['uid']}")
            return self._update_locked(rt, old, jcopy(body), subresource, dry_run), False

    def _update_locked(self, rt, old, new, subresource, dry_run):
        oldobj = old.obj
        if subresource == "status":
            obj = jcopy(oldobj)
            if "status" in new:
                obj["status"] = new["status"]
            else:
                obj.pop("status", None)
        else:
            obj = new
            md = obj.setdefault("metadata", {})
            omd = oldobj["metadata"]
            for f in ("uid", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "generation"):
                if f in omd:
                    md[f] = omd[f]
                else:
                    md.pop(f, None)
            md["name"] = omd["name"]
            if rt.namespaced:
                md["namespace"] = omd["namespace"]
            md.pop("managedFields", None)
            md.pop("selfLink", None)
            if rt.status:
                if "status" in oldobj:
                    obj["status"] = jcopy(oldobj["status"])
                else:
                    obj.pop("status", None)
            if (omd.get("deletionTimestamp") and
                    set(md.get("finalizers") or []) - set(omd.get("finalizers") or [])):
                raise APIError.invalid(rt, omd["name"], [
                    ("metadata.finalizers", "FieldValueForbidden",
                     "Forbidden: no new finalizers can be added if the object is being deleted")])
            self._default(rt, obj, oldobj)
            self._validate(rt, obj)
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        md = obj["metadata"]
        md["resourceVersion"] = oldobj["metadata"]["resourceVersion"]
        if rt.generation:
            def body_of(o):
                return {k: v for k, v in o.items()
                        if k not in ("metadata", "status", "kind", "apiVersion")}
            if body_of(obj) != body_of(oldobj):
                md["generation"] = int(oldobj["metadata"].get("generation") or 0) + 1
        if _canonical(rt, obj) == oldobj:
            return old                      # etcd: an identical write is no write
        if dry_run:
            return Stored(_canonical(rt, obj))
        if md.get("deletionTimestamp") and not md.get("finalizers"):
            # the last finalizer is gone: the update becomes the deletion (one DELETED event)
            return self._commit(rt, "DELETED", obj, old).stored
        return self._commit(rt, "MODIFIED", obj, old).stored

    def patch(self, rt, ns, name, ctype, patch, subresource=None, dry_run=False,
              field_manager=None, force=False):
        """PATCH.  Returns (Stored, created)."""
        with self.cond:
            old = self.current(rt, ns, name)
            if ctype == "application/apply-patch+yaml":
                if not field_manager:
                    raise APIError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: '
                                                   'fieldManager: Required value: is required '
                                                   'for apply patch')
                if not isinstance(patch, dict):
                    raise APIError.bad_request("apply patch must be an object")
                if old is None:
                    if subresource:
                        raise APIError.not_found(rt, name)
                    b = jcopy(patch)
                    b.setdefault("metadata", {})["name"] = name
                    self._check_body(rt, b, ns, name)
                    return self.create(rt, ns, b, dry_run), True
                self._check_body(rt, patch, ns, name)
                new = merge_patch(old.obj, patch)
            else:
                if old is None:
                    raise APIError.not_found(rt, name)
                if ctype == "application/merge-patch+json":
                    if not isinstance(patch, dict):
                        raise APIError.bad_request("merge patch must be a JSON object")
                    new = merge_patch(old.obj, patch)
                elif ctype == "application/strategic-merge-patch+json":
                    if not isinstance(patch, dict):
                        raise APIError.bad_request("strategic merge patch must be a JSON object")
                    new = strategic_merge_patch(old.obj, patch, rt.smp_keys)
                elif ctype == "application/json-patch+json":
                    new = json_patch(old.obj, patch)
                else:
                    raise APIError(415, "UnsupportedMediaType",
                                   "the body of the request was in an unknown format - "
                                   "accepted media types include: application/json-patch+json, "
                                   "application/merge-patch+json, application/apply-patch+yaml, "
                                   "application/strategic-merge-patch+json")
            if not isinstance(new, dict):
                raise APIError.bad_request("the patched object is not an object")
            new = jcopy(new)
            self._check_body(rt, new, ns, name)
            nmd = new.setdefault("metadata", {})
            if not isinstance(nmd, dict):
                raise APIError.bad_request("metadata must be an object")
            want_rv = nmd.get("resourceVersion")
            if want_rv not in (None, "") and str(want_rv) != old.obj["metadata"]["resourceVersion"]:
                raise APIError.conflict(rt, name)
            if nmd.get("uid") not in (None, "", old.obj["metadata"]["uid"]):
                raise APIError.conflict(rt, name, f"Precondition failed: UID in precondition: "
                                                  f"{nmd['uid']}, UID in object meta: "
                                                  f"{old.obj['metadata']['uid']}")
            return self._update_locked(rt, old, new, subresource, dry_run), False

    def delete(self, rt, ns, name, options=None, dry_run=False):
        """DELETE.  Returns (Stored, gone): gone is False when finalizers keep the object."""
        options = options or {}
        with self.cond:
            old = self.current(rt, ns, name)
            if old is None:
                raise APIError.not_found(rt, name)
            pre = options.get("preconditions") or {}
            omd = old.obj["metadata"]
            if pre.get("uid") and pre["uid"] != omd["uid"]:
                raise APIError.conflict(rt, name, f"Precondition failed: UID in precondition: "
                                                  f"{pre['uid']}, UID in object meta: "
                                                  f"{omd['uid']}")
            if pre.get("resourceVersion") and str(pre["resourceVersion"]) != omd["resourceVersion"]:
                raise APIError.conflict(rt, name, f"Precondition failed: ResourceVersion in "
                                                  f"precondition: {pre['resourceVersion']}, "
                                                  f"ResourceVersion in object meta: "
                                                  f"{omd['resourceVersion']}")
            if dry_run:
                return old, True
            if rt.kind == "Namespace":
                return self._delete_namespace(old), True
            if omd.get("finalizers"):
                if omd.get("deletionTimestamp"):
                    return old, False
                obj = jcopy(old.obj)
                obj["metadata"]["deletionTimestamp"] = now_rfc3339()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                if rt.generation:
                    obj["metadata"]["generation"] = int(omd.get("generation") or 0) + 1
                return self._commit(rt, "MODIFIED", obj, old).stored, False
            return self._commit(rt, "DELETED", None, old).stored, True

    def _delete_namespace(self, old):
        ns = old.name
        obj = jcopy(old.obj)
        obj["metadata"]["deletionTimestamp"] = now_rfc3339()
        obj["metadata"]["deletionGracePeriodSeconds"] = 0
        obj.setdefault("status", {})["phase"] = "Terminating"
        terminating = self._commit(NAMESPACES, "MODIFIED", obj, old).stored
        for rt in RESOURCES:
            if rt.namespaced:
                for key in sorted(k for k, s in self.objects[rt].items() if s.ns == ns):
                    self._commit(rt, "DELETED", None, self.objects[rt][key])
        self._commit(NAMESPACES, "DELETED", None, self.objects[NAMESPACES][ns])
        return terminating

    # --- list ---

    def list(self, rt, filt, limit=0, cont=None, rv=None, rv_match=None):
        """LIST with the real resourceVersion semantics.  Returns
        (list_rv, [Stored], continue_token or None, remainingItemCount or None)."""
        if rv_match not in (None, "", "Exact", "NotOlderThan"):
            raise _invalid_list_options("resourceVersionMatch", "FieldValueNotSupported",
                                        f'Unsupported value: "{rv_match}": supported values: '
                                        f'"Exact", "NotOlderThan"')
        if rv_match and rv in (None, ""):
            raise _invalid_list_options("resourceVersionMatch", "FieldValueForbidden",
                                        "Forbidden: resourceVersionMatch is forbidden unless "
                                        "resourceVersion is provided")
        if cont and rv not in (None, ""):
            raise APIError.bad_request("specifying resource version is not allowed when using "
                                       "continue")
        if cont and rv_match:
            raise _invalid_list_options("resourceVersionMatch", "FieldValueForbidden",
                                        "Forbidden: resourceVersionMatch is forbidden when "
                                        "continue is provided")
        prefix = f"{filt.ns}/" if filt.ns is not None else ""
        start = ""
        if cont:
            at, start = decode_continue(cont)
            with self.cond:
                if at == -1:
                    at = self.rv
                elif at < self.compacted:
                    raise APIError.expired(
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter, "
                        "or use the continue token in this response to retrieve the remainder "
                        "of the results. Continuing with the provided token results in an "
                        "inconsistent list - objects that were created, modified, or deleted "
                        "between the time the first chunk was returned and now may show up in "
                        "the list.", list_meta={"continue": encode_continue(-1, start)})
        elif rv in (None, ""):
            at = self.rv
        else:
            try:
                want = int(rv)
                if want < 0:
                    raise ValueError
            except ValueError:
                raise APIError.bad_request(f'resourceVersion: Invalid value: "{rv}": '
                                           f'invalid resource version')
            if want == 0:
                if rv_match == "Exact":
                    raise _invalid_list_options("resourceVersionMatch", "FieldValueForbidden",
                                                'Forbidden: resourceVersionMatch "exact" is '
                                                'forbidden for resourceVersion "0"')
                at, limit = self.rv, 0           # served from the cache: no paging
            else:
                if not self.wait_for_rv(want):
                    raise APIError.too_large_rv(want, self.rv)
                exact = rv_match == "Exact" or (not rv_match and limit)
                at = want if exact else self.rv
        keys, objs = self.snapshot(rt, at)
        lo = bisect.bisect_left(keys, prefix + start)
        hi = bisect.bisect_left(keys, prefix[:-1] + "0") if prefix else len(keys)
        items, i = [], lo
        while i < hi:
            s = objs[keys[i]]
            i += 1
            if filt.matches(s):
                items.append(s)
                if limit and len(items) >= limit:
                    break
        token = remaining = None
        if limit and len(items) >= limit and i < hi:
            token = encode_continue(at, keys[i - 1][len(prefix):] + "\x00")
            if not filt.has_selectors():
                remaining = hi - i
        return at, items, token, remaining


def encode_continue(rv, start):
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start},
                     separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_continue(token):
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        d = json.loads(raw)
        if d.get("v") != "meta.k8s.io/v1":
            raise ValueError("incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
        rv, start = int(d["rv"]), d["start"]
        if not isinstance(start, str) or start.startswith("/") or ".." in start:
            raise ValueError("invalid start key")
        if rv == 0 or rv < -1:
            raise ValueError("incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
        return rv, start
    except (ValueError, KeyError, TypeError) as e:
        raise APIError.bad_request(f"continue key is not valid: {e}")


NAMESPACES = resource_type("namespaces")


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------

class Fault:
    """A planned failure: the next `count` requests matching verb/resource get it."""

    def __init__(self, verb, resource, code, count, message, retry_after, delay, bad_line,
                 reset):
        self.verb = verb
        self.resource = resource
        self.code = code
        self.count = count
        self.message = message
        self.retry_after = retry_after
        self.delay = delay
        self.bad_line = bad_line
        self.reset = reset

    def matches(self, verb, rt):
        return self.verb in ("*", verb) and (self.resource is None or self.resource is rt)

    def error(self):
        reasons = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                   409: "Conflict", 410: "Expired", 422: "Invalid", 429: "TooManyRequests",
                   500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
        msg = self.message or "injected fault"
        if self.code == 500:
            e = APIError.internal(msg)
        else:
            e = APIError(self.code, reasons.get(self.code, ""), msg)
        if self.retry_after is not None:
            e.headers["Retry-After"] = str(self.retry_after)
            e.details = dict(e.details or {}, retryAfterSeconds=int(self.retry_after))
        return e


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

def parse_bool(v):
    """metav1 query booleans: absent is false; "false" and "0" are false; anything else true."""
    if v is None:
        return False
    return v.lower() not in ("false", "0")


def _int_param(q, name, default=None):
    v = q.get(name)
    if v in (None, ""):
        return default
    try:
        return int(v)
    except ValueError:
        raise APIError.bad_request(f"{name}: Invalid value: {v!r}: must be an integer")


class Route:
    """What a request path means."""

    def __init__(self, kind, rt=None, ns=None, name=None, sub=None, doc=None, watch_prefix=False):
        self.kind = kind          # "resource", "doc", "health", "control"
        self.rt = rt
        self.ns = ns
        self.name = name
        self.sub = sub
        self.doc = doc
        self.watch_prefix = watch_prefix


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, addr, api, ssl_ctx, family):
        self.address_family = family
        self.api = api
        self.ssl_ctx = ssl_ctx
        self.conns = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # as Go does by default
        if self.ssl_ctx is not None:
            sock = self.ssl_ctx.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False)
        return sock, addr

    def process_request_thread(self, request, client_address):
        with self.conns_lock:
            self.conns.add(request)
        try:
            if self.ssl_ctx is not None:
                request.settimeout(10)
                request.do_handshake()
                request.settimeout(None)
            super().process_request_thread(request, client_address)
        except (OSError, ssl.SSLError):
            self.shutdown_request(request)
        finally:
            with self.conns_lock:
                self.conns.discard(request)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)

    def cut_connections(self):
        with self.conns_lock:
            conns = list(self.conns)
        for c in conns:
            _hard_shutdown(c)


def _hard_shutdown(sock):
    """Shuts the TCP connection down under any TLS layer (no close_notify), from any thread."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-emulator"
    sys_version = ""
    timeout = 300

    def log_message(self, fmt, *args):
        if self.server.api.verbose:
            sys.stderr.write("kube-emulator: %s - %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # --- plumbing ---

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(parts)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, code, body, ctype="application/json", headers=None):
        self._code = code
        self.send_response(code)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.command != "HEAD":             # headers and body in one write
            self._headers_buffer.append(b"\r\n" + body)
            self.flush_headers()
        else:
            self.end_headers()

    def _send_obj(self, code, obj, headers=None):
        self._send(code, go_json(obj) + b"\n", headers=headers)

    def _send_error(self, e):
        self._send(e.code, go_json(e.status()) + b"\n", headers=e.headers)

    def _dispatch(self):
        api = self.server.api
        self._code = None
        self._watch = False
        t0 = time.monotonic()
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        route = None
        try:
            body = self._read_body()
            route = api._route(url.path)
            verb = self._verb(route, q)
            if route.kind == "control":
                api._authenticate(self.headers.get("Authorization"), route)
                self._control(route, q, body)
                return
            api._authenticate(self.headers.get("Authorization"), route)
            if route.kind == "health":
                self._send(200, b"ok", ctype="text/plain; charset=utf-8")
                return
            if route.kind == "doc":
                if self.command not in ("GET", "HEAD"):
                    raise APIError(405, "MethodNotAllowed", "the server does not allow this "
                                                            "method on the requested resource")
                self._send_obj(200, api._doc(route.doc, self.headers.get("Host")))
                return
            api._authorize(verb, route)
            fault = api._take_fault(verb, route.rt)
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.reset:
                    self.close_connection = True
                    _hard_shutdown(self.connection)
                    self._code = 0
                    return
                if fault.code:
                    raise fault.error()
            self._resource(route, verb, q, body, fault)
        except APIError as e:
            self._send_error(e)
        except (ConnectionError, ssl.SSLError, BrokenPipeError, TimeoutError):
            self.close_connection = True
        except Exception as e:  # a bug in the emulator: answer 500 and say so
            import traceback
            traceback.print_exc()
            try:
                self._send_error(APIError.internal(f"emulator error: {e!r}"))
            except OSError:
                self.close_connection = True
        finally:
            api._log_request(self.command, url.path, q, self._code, self._watch,
                             time.monotonic() - t0)

    def _verb(self, route, q):
        m = self.command
        if route.kind != "resource":
            return m.lower()
        if m in ("GET", "HEAD"):
            if route.watch_prefix or parse_bool(q.get("watch")):
                return "watch"
            return "get" if route.name else "list"
        if m == "POST":
            return "create" if not route.name else "post"
        if m == "PUT":
            return "update"
        if m == "PATCH":
            return "patch"
        if m == "DELETE":
            return "delete" if route.name else "deletecollection"
        return m.lower()

    # --- resources ---

    def _decode(self, body, ctype=None):
        if not body:
            raise APIError.bad_request("the request body is empty")
        ctype = (ctype or self.headers.get("Content-Type") or "application/json").split(";")[0]
        try:
            if "yaml" in ctype:
                if yaml is None:
                    raise APIError(415, "UnsupportedMediaType", "YAML needs python3-yaml")
                return yaml.safe_load(body.decode("utf-8"))
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError.bad_request(f"couldn't get version/kind; json parse error: {e}")
        except Exception as e:  # yaml errors
            raise APIError.bad_request(f"error decoding YAML: {e}")

    def _resource(self, route, verb, q, body, fault):
        api = self.server.api
        store = api.store
        rt = route.rt
        dry = q.get("dryRun") == "All"
        if "dryRun" in q and q["dryRun"] not in ("All", ""):
            raise APIError.bad_request(f'dryRun: Unsupported value: "{q["dryRun"]}": supported '
                                       f'values: "All"')
        if route.sub is not None and route.sub != "status":
            raise APIError.not_found(rt, route.name)
        if route.sub == "status" and not rt.status:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        if route.sub == "status" and verb not in ("get", "update", "patch"):
            raise self._not_allowed()
        if verb == "watch":
            self._watch = True
            return self._serve_watch(route, q, fault)
        if verb == "list":
            filt = _Filter(rt, route.ns, q.get("labelSelector", ""), q.get("fieldSelector", ""))
            limit = max(0, _int_param(q, "limit", 0) or 0)
            at, items, token, remaining = store.list(rt, filt, limit, q.get("continue") or None,
                                                     q.get("resourceVersion"),
                                                     q.get("resourceVersionMatch") or None)
            return self._send_list(rt, at, items, token, remaining)
        if verb == "get":
            return self._send(200, store.get(rt, route.ns, route.name).full + b"\n")
        if verb == "create":
            if rt.namespaced and route.ns is None:
                raise _not_found_path()
            obj = self._decode(body)
            s = store.create(rt, route.ns, obj, dry)
            return self._send(201, s.full + b"\n")
        if verb == "update":
            obj = self._decode(body)
            s, created = store.update(rt, route.ns, route.name, obj, route.sub, dry)
            return self._send(201 if created else 200, s.full + b"\n")
        if verb == "patch":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            patch = self._decode(body, ctype if ctype.endswith("yaml") else "application/json")
            s, created = store.patch(rt, route.ns, route.name, ctype, patch, route.sub, dry,
                                     q.get("fieldManager"), parse_bool(q.get("force")))
            return self._send(201 if created else 200, s.full + b"\n")
        if verb == "delete":
            opts = self._decode(body) if body else {}
            for k in ("gracePeriodSeconds", "propagationPolicy"):
                if k in q:
                    opts.setdefault(k, q[k])
            s, gone = store.delete(rt, route.ns, route.name, opts, dry or
                                   "All" in (opts.get("dryRun") or []))
            if gone and rt.kind != "Namespace":
                det = rt.details(s.name)
                det["uid"] = s.obj["metadata"]["uid"]
                return self._send_obj(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                            "status": "Success", "details": det})
            return self._send(200, s.full + b"\n")
        if verb == "deletecollection":
            filt = _Filter(rt, route.ns, q.get("labelSelector", ""), q.get("fieldSelector", ""))
            deleted = []
            with store.cond:
                _, items, _, _ = store.list(rt, filt)
                for s in items:
                    d, _ = store.delete(rt, s.ns, s.name, None, dry)
                    deleted.append(d)
                at = store.rv
            return self._send_list(rt, at, deleted, None, None)
        raise self._not_allowed()

    @staticmethod
    def _not_allowed():
        return APIError(405, "MethodNotAllowed",
                        "the server does not allow this method on the requested resource")

    def _send_list(self, rt, at, items, token, remaining):
        meta = {"resourceVersion": str(at)}
        if token:
            meta["continue"] = token
        if remaining is not None:
            meta["remainingItemCount"] = remaining
        head = (b'{"kind":"' + rt.list_kind.encode() + b'","apiVersion":"' +
                rt.api_version.encode() + b'","metadata":' + go_json(meta) + b',"items":[')
        self._send(200, head + b",".join(s.item for s in items) + b"]}\n")

    # --- watch ---

    def _serve_watch(self, route, q, fault):
        api = self.server.api
        store = api.store
        rt = route.rt
        fsel = q.get("fieldSelector", "")
        if route.name:
            sel = f"metadata.name={route.name}"
            fsel = f"{fsel},{sel}" if fsel else sel
        filt = _Filter(rt, route.ns, q.get("labelSelector", ""), fsel)
        rv = q.get("resourceVersion") or None
        rv_match = q.get("resourceVersionMatch") or None
        bookmarks = parse_bool(q.get("allowWatchBookmarks"))
        initial = q.get("sendInitialEvents")
        initial = None if initial is None else parse_bool(initial)
        timeout = _int_param(q, "timeoutSeconds")
        if initial is not None:
            if initial and not bookmarks:
                raise _invalid_list_options("allowWatchBookmarks", "FieldValueForbidden",
                                            "Forbidden: allowWatchBookmarks required when "
                                            "sendInitialEvents is true")
            if rv_match != "NotOlderThan":
                raise _invalid_list_options("resourceVersionMatch", "FieldValueForbidden",
                                            "Forbidden: sendInitialEvents requires setting "
                                            "resourceVersionMatch to NotOlderThan")
        elif rv_match:
            raise _invalid_list_options("resourceVersionMatch", "FieldValueForbidden",
                                        "Forbidden: resourceVersionMatch is forbidden for watch "
                                        "unless sendInitialEvents is provided")
        if rv is not None:
            try:
                start = int(rv)
                if start < 0:
                    raise ValueError
            except ValueError:
                raise APIError.bad_request(f'resourceVersion: Invalid value: "{rv}": invalid '
                                           f'resource version')
        else:
            start = 0
        send_state = initial if initial is not None else start == 0
        if timeout is None or timeout <= 0:
            m = api.min_request_timeout
            timeout = random.uniform(m, 2 * m)
        deadline = time.monotonic() + timeout

        error = None
        state = []
        with store.cond:
            if start > store.rv:
                ok = store.wait_for_rv(start)
                if not ok:
                    error = APIError.too_large_rv(start, store.rv)
            if error is None:
                if send_state:
                    keys, objs = store.snapshot(rt, store.rv)
                    state = [objs[k] for k in keys if filt.matches(objs[k])]
                    pos = store.rv
                elif start == 0:
                    pos = store.rv
                elif start < store.compacted:
                    error = APIError.expired(f"too old resource version: {start} "
                                             f"({store.compacted})")
                else:
                    pos = start
            w = _WatchState(rt, filt.ns, filt, self.connection, self.client_address)
            if error is None:
                w.pos = pos
                store.watches.add(w)

        chunked = self.request_version != "HTTP/1.0"
        self._code = 200
        self.send_response(200)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True
        self.end_headers()

        def emit(data):
            size = api.watch_chunk_size
            if not chunked:
                self.wfile.write(data)
            elif size and len(data) > size:
                for i in range(0, len(data), size):
                    part = data[i:i + size]
                    self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
            else:
                self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")

        def bookmark(at, end_of_initial=False):
            md = {"resourceVersion": str(at)}
            if end_of_initial:
                md["annotations"] = {"k8s.io/initial-events-end": "true"}
            emit(_event_bytes("BOOKMARK", go_json({"kind": rt.kind, "apiVersion": rt.api_version,
                                                   "metadata": md})))

        clean = True
        try:
            if error is not None:
                emit(_event_bytes("ERROR", go_json(error.status())))
                return
            if fault is not None and fault.bad_line is not None:
                emit(fault.bad_line)
            for s in state:
                emit(_event_bytes("ADDED", s.full))
            if initial:
                bookmark(pos, True)
            freq = api.bookmark_interval
            next_bm = time.monotonic() + freq
            if deadline - 2 < next_bm:
                next_bm = max(time.monotonic(), deadline - 2)
            next_check = time.monotonic() + 1.0
            while True:
                with store.cond:
                    while True:
                        now = time.monotonic()
                        if (w.cancelled or w.injected or store.rv > pos or
                                store.trimmed > pos or now >= deadline or now >= next_check or
                                (bookmarks and now >= next_bm)):
                            break
                        wake = min(deadline, next_check, next_bm if bookmarks else deadline)
                        store.cond.wait(max(0.0, wake - now))
                    events = store.events_after(pos)
                    injected = list(w.injected)
                    w.injected.clear()
                if w.cancelled:
                    clean = not w.abrupt
                    return
                if events is None:       # fell behind the history: the cacher drops us
                    return
                for data in injected:
                    emit(data)
                for ev in events:
                    if ev.rt is rt:
                        data = self._transform(ev, filt)
                        if data is not None:
                            emit(data)
                    pos = ev.rv
                w.pos = pos
                now = time.monotonic()
                if now >= deadline:
                    return
                if bookmarks and now >= next_bm:
                    bookmark(pos)
                    next_bm = now + freq
                    if deadline - 2 > now and deadline - 2 < next_bm:
                        next_bm = deadline - 2
                if now >= next_check:
                    next_check = now + 1.0
                    if self._peer_closed():
                        clean = False
                        return
        except (OSError, ssl.SSLError, ValueError):
            clean = False
        finally:
            with store.cond:
                store.watches.discard(w)
            if clean:
                try:
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except (OSError, ssl.SSLError, ValueError):
                    self.close_connection = True
            else:
                self.close_connection = True
                _hard_shutdown(self.connection)

    @staticmethod
    def _transform(ev, filt):
        """Watch-cache semantics for one event seen through a filter: bytes to send or None."""
        if ev.type == "ADDED":
            return ev.wire() if filt.matches(ev.stored) else None
        if ev.type == "DELETED":
            return ev.wire() if filt.matches(ev.stored) else None
        cur = filt.matches(ev.stored)
        old = ev.prev is not None and filt.matches(ev.prev)
        if cur and old:
            return ev.wire()
        if cur:
            return _event_bytes("ADDED", ev.stored.full)
        if old:
            return _event_bytes("DELETED", ev.prev.with_rv(ev.rv).full)
        return None

    def _peer_closed(self):
        """True when the client went away (a watch client never sends anything)."""
        sock = self.connection
        try:
            r, _, _ = select.select([sock], [], [], 0)
            if not r:
                return False
            if isinstance(sock, ssl.SSLSocket):
                return True
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    # --- /_emulator/ controls (CLI mode) ---

    def _control(self, route, q, body):
        api = self.server.api
        if self.command != "POST" and route.doc != "stats":
            raise self._not_allowed()
        what = route.doc
        if what == "stats":
            with api.store.cond:
                out = {"resourceVersion": api.store.rv, "compacted": api.store.compacted,
                       "watches": [{"resource": w.rt.plural, "namespace": w.ns}
                                   for w in api.store.watches]}
            return self._send_obj(200, out)
        if what == "compact":
            rv = api.compact(int(q["rv"]) if q.get("rv") else None)
            return self._send_obj(200, {"compacted": rv})
        if what == "close-watches":
            n = api.close_watches(q.get("resource") or None, parse_bool(q.get("abrupt")))
            return self._send_obj(200, {"closed": n})
        if what == "fail-next":
            api.fail_next(q.get("verb", "list"), q.get("resource") or None,
                          code=int(q.get("code", 500)), count=int(q.get("count", 1)),
                          message=q.get("message"),
                          retry_after=int(q["retryAfter"]) if q.get("retryAfter") else None,
                          delay=float(q.get("delay", 0)),
                          bad_line=body if body else None, reset=parse_bool(q.get("reset")))
            return self._send_obj(200, {"ok": True})
        if what == "inject-watch-line":
            n = api.inject_watch_line(body, q.get("resource") or None)
            return self._send_obj(200, {"watches": n})
        if what == "token":
            api.set_token(body.decode().strip())
            return self._send_obj(200, {"ok": True})
        if what == "clear-faults":
            api.clear_faults()
            return self._send_obj(200, {"ok": True})
        raise APIError(404, "NotFound", "unknown emulator control")


# ---------------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------------

def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {r.stderr.strip()}")


def make_certs(state_dir, hosts=()):
    """A CA (ca.crt, ca.key) and a serving certificate (server.crt, server.key) signed by it in
    `state_dir`; kept when already there.  Returns (ca_file, cert_file, key_file)."""
    d = Path(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    ca, cert, key = d / "ca.crt", d / "server.crt", d / "server.key"
    if ca.exists() and cert.exists() and key.exists() and (d / "ca.key").exists():
        return str(ca), str(cert), str(key)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=kube-emulator-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=kube-apiserver", cwd=d)
    sans = ["DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local",
            "IP:127.0.0.1", "IP:::1"]
    for h in hosts:
        if h and h not in ("localhost", "127.0.0.1", "::1", "0.0.0.0", "::"):
            sans.append(("IP:" if re.match(r"^[0-9.:]+$", h) else "DNS:") + h)
    (d / "server.ext").write_text(
        "subjectAltName=" + ",".join(sans) + "\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "3650", "-extfile", "server.ext",
             cwd=d)
    for f in ("ca.key", "server.key"):
        os.chmod(d / f, 0o600)
    return str(ca), str(cert), str(key)


# ---------------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------------

def load_manifests(path):
    """Kubernetes objects from a YAML/JSON file or a directory of them (sorted, recursive);
    multi-document YAML and `kind: List` are expanded."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml", ".json")) \
        if p.is_dir() else [p]
    out = []
    for f in files:
        text = f.read_text()
        if f.suffix == ".json":
            docs = [json.loads(text)]
        else:
            if yaml is None:
                raise RuntimeError("YAML manifests need python3-yaml")
            docs = list(yaml.safe_load_all(text))
        for d in docs:
            if not d:
                continue
            if str(d.get("kind", "")).endswith("List") and "items" in d:
                out.extend(i for i in d["items"] if i)
            else:
                out.append(d)
    return out


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------

class KubeAPIServer:
    """The emulated API server.

    ::

        srv = KubeAPIServer(tls=True, token="t")
        srv.start()                 # serves in background threads
        srv.url, srv.ca_file, srv.kubeconfig, srv.token
        srv.create(fixtures.ingress("web", host="a.example"))
        ...
        srv.stop()

    Parameters: `host`, `port` (0 = any free port, kept across restart()), `tls`, `token` (None
    with no `token_file` = no authentication), `token_file` (re-read when it changes; its
    content replaces `token`), `state_dir` (certificates, kubeconfig; a temporary directory by
    default), `bookmark_interval` (seconds; the real server uses about 60), `history_limit`
    (events kept for watches and continue tokens), `min_request_timeout` (a watch without
    timeoutSeconds lasts 1-2x this), `anonymous` (requests without a token are
    system:anonymous instead of 401), `auto_namespace` (the direct-write helpers create missing
    namespaces; API requests always get 404 for them), `initial_rv`, `verbose` (log requests to
    stderr), `user` (name in Forbidden messages), `default_namespaces` (created at start),
    `cert_dir` (where the CA and serving certificate are made or reused; default `state_dir`:
    share one between servers to skip the openssl runs).
    """

    def __init__(self, host="127.0.0.1", port=0, tls=True, token="token", token_file=None,
                 state_dir=None, bookmark_interval=60.0, history_limit=200_000,
                 min_request_timeout=1800, anonymous=False, auto_namespace=True, initial_rv=0,
                 verbose=False, user="system:serviceaccount:sluice:sluice-watcher",
                 default_namespaces=("default", "kube-system", "kube-public", "kube-node-lease"),
                 cert_dir=None):
        self.host = host
        self.port = port
        self.tls = tls
        self._tokens = set() if token is None else {token}
        self.token_file = str(token_file) if token_file else None
        self._token_file_stamp = None
        self.anonymous = anonymous
        self.user = user
        self.bookmark_interval = float(bookmark_interval)
        self.min_request_timeout = float(min_request_timeout)
        self.auto_namespace = auto_namespace
        self.verbose = verbose
        self.watch_chunk_size = None   # split every watch event into chunks of this many bytes
        self.store = Store(history_limit=history_limit, initial_rv=initial_rv)
        self._own_state_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="kube-emulator-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.cert_dir = Path(cert_dir) if cert_dir else self.state_dir
        self.ca_file = self.cert_file = self.key_file = None
        self._faults = []
        self._forbidden = []
        self._lock = threading.Lock()
        self.requests = collections.deque(maxlen=20000)
        self._httpd = None
        self._thread = None
        if self.token_file:
            self._reload_token_file()
        for ns in default_namespaces:
            self.store.create(NAMESPACES, None, {"metadata": {"name": ns}})

    # --- lifecycle ---

    def start(self):
        """Starts serving in a background thread; returns self."""
        if self._httpd is not None:
            return self
        ssl_ctx = None
        if self.tls:
            self.ca_file, self.cert_file, self.key_file = make_certs(self.cert_dir, [self.host])
            ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ssl_ctx.load_cert_chain(self.cert_file, self.key_file)
            ssl_ctx.set_alpn_protocols(["http/1.1"])
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._httpd = _Server((self.host, self.port), self, ssl_ctx, family)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="kube-emulator", daemon=True)
        self._thread.start()
        self._write_client_files()
        return self

    def stop(self):
        """Stops serving: the listener closes and every connection (watches too) is cut."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        self.close_watches(abrupt=True)
        httpd.cut_connections()
        self._thread.join(timeout=5)

    def restart(self, compact=True, downtime=0.0):
        """stop(), wait `downtime` seconds, start() on the same port.  The objects survive (as
        in etcd); with `compact` the history is dropped, as a new watch cache starts at the
        current revision, so resuming older watches gets 410."""
        self.stop()
        if compact:
            self.compact()
        if downtime:
            time.sleep(downtime)
        return self.start()

    def close(self):
        self.stop()
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def kubeconfig(self):
        return str(self.state_dir / "kubeconfig")

    @property
    def token(self):
        """The current token (any one of them if several are accepted)."""
        self._reload_token_file()
        return next(iter(sorted(self._tokens)), None)

    def _write_client_files(self):
        cluster = {"server": self.url}
        if self.tls:
            cluster["certificate-authority"] = str(Path(self.ca_file).resolve())
        user = {}
        if self.token_file:
            user["tokenFile"] = str(Path(self.token_file).resolve())
        elif self.token:
            user["token"] = self.token
        cfg = {"apiVersion": "v1", "kind": "Config",
               "clusters": [{"name": "emulator", "cluster": cluster}],
               "users": [{"name": "emulator", "user": user}],
               "contexts": [{"name": "emulator", "context": {"cluster": "emulator",
                                                             "user": "emulator",
                                                             "namespace": "default"}}],
               "current-context": "emulator"}
        (self.state_dir / "kubeconfig").write_text(json.dumps(cfg, indent=2) + "\n")
        sa = self.state_dir / "serviceaccount"
        sa.mkdir(exist_ok=True)
        (sa / "token").write_text(self.token or "")
        (sa / "namespace").write_text("default")
        if self.tls:
            shutil.copyfile(self.ca_file, sa / "ca.crt")
        (self.state_dir / "url").write_text(self.url + "\n")

    # --- auth ---

    def set_token(self, *tokens):
        """Accepts exactly these bearer tokens from now on (rotation: the old one gets 401)."""
        with self._lock:
            self._tokens = set(tokens)
        sa = self.state_dir / "serviceaccount" / "token"
        if sa.parent.exists():
            sa.write_text(tokens[0] if tokens else "")

    def _reload_token_file(self):
        if not self.token_file:
            return
        try:
            st = os.stat(self.token_file)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp != self._token_file_stamp:
                tok = Path(self.token_file).read_text().strip()
                with self._lock:
                    self._tokens = {tok} if tok else set()
                    self._token_file_stamp = stamp
        except OSError:
            pass

    def _authenticate(self, header, route):
        self._reload_token_file()
        with self._lock:
            tokens = set(self._tokens)
        if not tokens and not self.token_file:
            return
        given = None
        if header:
            parts = header.split(None, 1)
            if len(parts) == 2 and parts[0].lower() == "bearer":
                given = parts[1].strip()
        if given is not None and given in tokens:
            return
        if given is None and self.anonymous:
            if route.kind == "health" or route.doc == "version":
                return
            if route.kind == "resource":
                raise APIError(403, "Forbidden",
                               f'{route.rt.qualified} is forbidden: User "system:anonymous" '
                               f'cannot access resource "{route.rt.plural}" in API group '
                               f'"{route.rt.group}"', route.rt.details(route.name or ""))
            raise APIError(403, "Forbidden", 'forbidden: User "system:anonymous" cannot get '
                                             'this path')
        raise APIError(401, "Unauthorized", "Unauthorized")

    def forbid(self, verb="*", resource=None, namespace=None):
        """Answers 403 Forbidden to matching requests (an RBAC denial) until allow()."""
        with self._lock:
            self._forbidden.append((verb, resource_type(resource) if resource else None,
                                    namespace))

    def allow(self):
        """Lifts every forbid()."""
        with self._lock:
            self._forbidden.clear()

    def _authorize(self, verb, route):
        with self._lock:
            rules = list(self._forbidden)
        rt = route.rt
        for v, r, ns in rules:
            if v in ("*", verb) and (r is None or r is rt) and (ns is None or ns == route.ns):
                who = self.user
                what = f'{rt.qualified} "{route.name}"' if route.name else rt.qualified
                where = (f' in the namespace "{route.ns}"' if route.ns
                         else " at the cluster scope")
                raise APIError(403, "Forbidden",
                               f'{what} is forbidden: User "{who}" cannot {verb} resource '
                               f'"{rt.plural}" in API group "{rt.group}"{where}',
                               rt.details(route.name or ""))

    # --- routing and discovery ---

    def _route(self, path):
        parts = [p for p in path.split("/") if p]
        if not parts:
            return Route("doc", doc="root")
        if parts[0] in ("healthz", "livez", "readyz"):
            return Route("health")
        if parts == ["version"]:
            return Route("doc", doc="version")
        if parts[0] == "_emulator" and len(parts) == 2:
            return Route("control", doc=parts[1])
        if parts[0] == "api":
            if len(parts) == 1:
                return Route("doc", doc="api")
            if parts[1] != "v1":
                raise _not_found_path()
            group, version, rest = "", "v1", parts[2:]
        elif parts[0] == "apis":
            if len(parts) == 1:
                return Route("doc", doc="apis")
            if parts[1] not in GROUPS or parts[1] == "":
                raise _not_found_path()
            if len(parts) == 2:
                return Route("doc", doc=("group", parts[1]))
            if parts[2] != "v1":
                raise _not_found_path()
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _not_found_path()
        if not rest:
            return Route("doc", doc=("resources", group))
        watch_prefix = False
        if rest[0] == "watch":
            watch_prefix, rest = True, rest[1:]
            if not rest:
                raise _not_found_path()

        def rtype(plural):
            rt = _BY_GVR.get((group, version, plural))
            if rt is None:
                raise _not_found_path()
            return rt

        ns = None
        if rest[0] == "namespaces" and group == "" and len(rest) >= 3 and \
                rest[2] not in ("status", "finalize"):
            ns, rest = rest[1], rest[2:]
            rt = rtype(rest[0])
            if not rt.namespaced:
                raise _not_found_path()
        elif rest[0] == "namespaces" and group != "":
            if len(rest) < 3:
                raise _not_found_path()
            ns, rest = rest[1], rest[2:]
            rt = rtype(rest[0])
            if not rt.namespaced:
                raise _not_found_path()
        else:
            rt = rtype(rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3 or (watch_prefix and sub) or (rt.namespaced and ns is None and name):
            raise _not_found_path()
        if sub == "finalize" and rt.kind == "Namespace":
            sub = "status"    # close enough: finalize writes spec.finalizers, unused here
        return Route("resource", rt=rt, ns=ns, name=name, sub=sub, watch_prefix=watch_prefix)

    def _doc(self, doc, host_header):
        if doc == "root":
            paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]
            for g in GROUPS:
                if g:
                    paths += [f"/apis/{g}", f"/apis/{g}/v1"]
            return {"paths": sorted(paths)}
        if doc == "version":
            return dict(K8S_VERSION)
        if doc == "api":
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                    "serverAddress": host_header or
                                                    f"{self.host}:{self.port}"}]}
        if doc == "apis":
            return {"kind": "APIGroupList", "apiVersion": "v1",
                    "groups": [self._group_doc(g, with_kind=False) for g in GROUPS if g]}
        if doc[0] == "group":
            return self._group_doc(doc[1], with_kind=True)
        if doc[0] == "resources":
            group = doc[1]
            res = []
            for rt in GROUPS[group]:
                verbs = ["create", "delete", "deletecollection", "get", "list", "patch",
                         "update", "watch"]
                if rt.kind == "Namespace":
                    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
                r = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                     "kind": rt.kind, "verbs": verbs}
                if rt.short_names:
                    r["shortNames"] = rt.short_names
                if rt.categories:
                    r["categories"] = rt.categories
                r["storageVersionHash"] = base64.b64encode(
                    rt.qualified.encode()[:8].ljust(8, b"=")).decode()[:11]
                res.append(r)
                if rt.status:
                    res.append({"name": f"{rt.plural}/status", "singularName": "",
                                "namespaced": rt.namespaced, "kind": rt.kind,
                                "verbs": ["get", "patch", "update"]})
            gv = f"{group}/v1" if group else "v1"
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": res}
        raise _not_found_path()

    @staticmethod
    def _group_doc(g, with_kind):
        gv = {"groupVersion": f"{g}/v1", "version": "v1"}
        d = {"name": g, "versions": [gv], "preferredVersion": dict(gv)}
        if with_kind:
            d = {"kind": "APIGroup", "apiVersion": "v1", **d}
        return d

    # --- faults ---

    def fail_next(self, verb="list", resource=None, code=500, count=1, message=None,
                  retry_after=None, delay=0.0, bad_line=None, reset=False):
        """The next `count` requests with this verb ("get", "list", "watch", "create", "update",
        "patch", "delete", "deletecollection" or "*") on this resource (kind, plural or None
        for any) fail:

        * `code` (e.g. 500, 503, 429 with `retry_after` seconds, 403...): answered with that
          Status instead of being served; `code=None` serves the request normally;
        * `delay`: the answer is held back this many seconds first;
        * `bad_line` (watch, with code=None): these bytes are sent as the first line of the
          stream, then the stream goes on normally (a corrupt event);
        * `reset`: the connection is cut without an answer.
        """
        if isinstance(bad_line, str):
            bad_line = bad_line.encode()
        if bad_line is not None and not bad_line.endswith(b"\n"):
            bad_line += b"\n"
        with self._lock:
            self._faults.append(Fault(verb, resource_type(resource) if resource else None,
                                      code if bad_line is None else None, count,
                                      message, retry_after, delay, bad_line, reset))

    def clear_faults(self):
        with self._lock:
            self._faults.clear()

    def _take_fault(self, verb, rt):
        with self._lock:
            for f in self._faults:
                if f.matches(verb, rt):
                    f.count -= 1
                    if f.count <= 0:
                        self._faults.remove(f)
                    return f
        return None

    def inject_watch_line(self, data, resource=None):
        """Writes `data` (a line; a newline is added) into every open watch on `resource` (any
        when None) as its own chunk, between events.  Returns how many watches got it."""
        if isinstance(data, str):
            data = data.encode()
        if not data.endswith(b"\n"):
            data += b"\n"
        rt = resource_type(resource) if resource else None
        n = 0
        with self.store.cond:
            for w in self.store.watches:
                if rt is None or w.rt is rt:
                    w.injected.append(data)
                    n += 1
            self.store.cond.notify_all()
        return n

    def close_watches(self, resource=None, abrupt=False):
        """Ends every open watch (on `resource`, or all): cleanly (terminating chunk, as when
        the server's timeout ends a watch) or, with `abrupt`, by cutting the TCP connection
        mid-stream.  Returns how many."""
        rt = resource_type(resource) if resource else None
        n = 0
        with self.store.cond:
            for w in list(self.store.watches):
                if rt is None or w.rt is rt:
                    w.cancelled = True
                    w.abrupt = abrupt
                    n += 1
                    if abrupt:
                        _hard_shutdown(w.conn)
            self.store.cond.notify_all()
        return n

    def watch_count(self, resource=None, namespace=None):
        """How many watches are open (on `resource`, in `namespace`)."""
        rt = resource_type(resource) if resource else None
        with self.store.cond:
            return sum(1 for w in self.store.watches
                       if (rt is None or w.rt is rt) and (namespace is None or w.ns == namespace))

    def wait_for_watch(self, resource=None, count=1, timeout=10.0, namespace=None):
        """Waits until at least `count` watches are open on `resource`; returns the number."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.watch_count(resource, namespace)
            if n >= count:
                return n
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{n} watches on {resource or 'anything'} after {timeout}s "
                                   f"(wanted {count})")
            time.sleep(0.01)

    # --- request log ---

    def _log_request(self, method, path, query, code, watch, seconds):
        self.requests.append({"method": method, "path": path, "query": query, "code": code,
                              "watch": watch, "seconds": seconds, "time": time.time()})

    def requests_matching(self, method=None, path=None, watch=None):
        """Logged requests (dicts: method, path, query, code, watch, seconds, time) filtered by
        method, a path regex, and whether they were watches."""
        rx = re.compile(path) if path else None
        return [r for r in list(self.requests)
                if (method is None or r["method"] == method) and
                (rx is None or rx.search(r["path"])) and (watch is None or r["watch"] == watch)]

    def clear_requests(self):
        self.requests.clear()

    # --- direct access (same events as API writes) ---

    @property
    def resource_version(self):
        """The current global resourceVersion (an int)."""
        return self.store.rv

    def compact(self, rv=None):
        """Drops the history up to and including `rv` (the current revision by default):
        watches from an older resourceVersion get 410 Expired, and so do continue tokens."""
        return self.store.compact(rv)

    def _ns_of(self, rt, obj, namespace=None):
        if not rt.namespaced:
            return None
        return namespace or (obj.get("metadata") or {}).get("namespace") or "default"

    def create(self, obj, namespace=None):
        """Creates an object (a dict with kind and apiVersion); returns the stored copy."""
        rt = _rt_for_object(obj)
        s = self.store.create(rt, self._ns_of(rt, obj, namespace), obj,
                              auto_namespace=self.auto_namespace)
        return jcopy(s.obj)

    def create_many(self, objs):
        """Creates many objects under one lock (fast bulk loading); returns how many.

        After a large load the stored objects are moved out of the cyclic garbage collector's
        reach (gc.freeze(), process-wide): with hundreds of thousands of dicts a full
        collection would otherwise stall requests for a large fraction of a second."""
        with self.store.cond:
            for o in objs:
                rt = _rt_for_object(o)
                self.store.create(rt, self._ns_of(rt, o), o, auto_namespace=self.auto_namespace)
        if len(objs) >= 1000:
            gc.collect()
            gc.freeze()
        return len(objs)

    def update(self, obj, check_rv=False):
        """Replaces an object (as PUT; status is kept for kinds with a status subresource).
        With `check_rv` the object's metadata.resourceVersion must be current."""
        rt = _rt_for_object(obj)
        body = jcopy(obj)
        if not check_rv:
            body.setdefault("metadata", {}).pop("resourceVersion", None)
        ns = self._ns_of(rt, obj)
        s, _ = self.store.update(rt, ns, obj["metadata"]["name"], body)
        return jcopy(s.obj)

    def update_status(self, obj):
        """Replaces an object's status (as PUT .../status)."""
        rt = _rt_for_object(obj)
        body = jcopy(obj)
        body.setdefault("metadata", {}).pop("resourceVersion", None)
        s, _ = self.store.update(rt, self._ns_of(rt, obj), obj["metadata"]["name"], body,
                                 subresource="status")
        return jcopy(s.obj)

    def apply(self, obj):
        """Creates the object, or replaces it when it exists (unconditionally)."""
        rt = _rt_for_object(obj)
        ns = self._ns_of(rt, obj)
        with self.store.cond:
            if self.store.current(rt, ns, obj["metadata"]["name"]) is None:
                return self.create(obj)
            return self.update(obj)

    def patch(self, kind, namespace, name, patch, patch_type="merge", subresource=None):
        """Patches an object: `patch_type` "merge", "strategic" or "json"."""
        rt = resource_type(kind)
        ctype = {"merge": "application/merge-patch+json",
                 "strategic": "application/strategic-merge-patch+json",
                 "json": "application/json-patch+json"}[patch_type]
        s, _ = self.store.patch(rt, namespace if rt.namespaced else None, name, ctype, patch,
                                subresource)
        return jcopy(s.obj)

    def delete(self, kind, namespace, name=None):
        """Deletes an object: delete("Ingress", "default", "web") or, for cluster-scoped kinds,
        delete("IngressClass", "sluice").  Returns its last state (None if it did not exist)."""
        rt, namespace, name = self._locate(kind, namespace, name)
        try:
            s, _ = self.store.delete(rt, namespace, name)
        except APIError as e:
            if e.code == 404:
                return None
            raise
        return jcopy(s.obj)

    def get(self, kind, namespace, name=None):
        """An object as stored (None if absent): get("Service", "default", "web")."""
        rt, namespace, name = self._locate(kind, namespace, name)
        with self.store.cond:
            s = self.store.current(rt, namespace, name)
        return None if s is None else jcopy(s.obj)

    @staticmethod
    def _locate(kind, namespace, name):
        rt = resource_type(kind)
        if name is None:
            namespace, name = None, namespace
        if rt.namespaced and not namespace:
            raise TypeError(f"{rt.kind} is namespaced: pass (kind, namespace, name)")
        return rt, (namespace if rt.namespaced else None), name

    def list(self, kind, namespace=None, label_selector=""):
        """Current objects of a kind (in a namespace), in key order."""
        rt = resource_type(kind)
        filt = _Filter(rt, namespace, label_selector)
        with self.store.cond:
            keys, objs = self.store.snapshot(rt, self.store.rv)
            return [jcopy(objs[k].obj) for k in keys if filt.matches(objs[k])]

    def load(self, path):
        """Creates (or replaces) the objects of YAML/JSON manifests; returns how many."""
        objs = load_manifests(path)
        for o in objs:
            self.apply(o)
        if len(objs) >= 1000:
            gc.collect()
            gc.freeze()
        return len(objs)


def _not_found_path():
    return APIError(404, "NotFound", "the server could not find the requested resource",
                    {"causes": [{"reason": "UnexpectedServerResponse",
                                 "message": "404 page not found"}]})


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Kubernetes API server emulator (list/watch/write for Ingress, Service, "
                    "EndpointSlice, Secret, IngressClass, Namespace, Lease, ...).  Test "
                    "controls are POST /_emulator/{compact,close-watches,fail-next,"
                    "inject-watch-line,token,clear-faults} and GET /_emulator/stats.")
    ap.add_argument("--listen", default="127.0.0.1:6443", help="HOST:PORT (port 0: any)")
    ap.add_argument("--tls", action="store_true", help="serve HTTPS (CA in STATE_DIR/ca.crt)")
    ap.add_argument("--token", help='accepted bearer token (default "token" unless '
                                     '--token-file or --no-auth)')
    ap.add_argument("--token-file", help="file holding the accepted bearer token, re-read when "
                                         "it changes")
    ap.add_argument("--no-auth", action="store_true", help="accept requests without a token")
    ap.add_argument("--anonymous", action="store_true",
                    help="requests without a token are system:anonymous (403) instead of 401")
    ap.add_argument("--state-dir", help="certificates, kubeconfig, serviceaccount/, url "
                                        "(default: a temporary directory)")
    ap.add_argument("--load", action="append", default=[], metavar="PATH",
                    help="YAML/JSON manifests (file or directory) to create at startup")
    ap.add_argument("--bookmark-interval", type=float, default=60.0, metavar="SECONDS")
    ap.add_argument("--history-limit", type=int, default=200_000, metavar="EVENTS")
    ap.add_argument("--min-request-timeout", type=float, default=1800, metavar="SECONDS",
                    help="a watch without timeoutSeconds lasts 1-2x this")
    ap.add_argument("--initial-rv", type=int, default=0)
    ap.add_argument("--verbose", "-v", action="store_true", help="log requests to stderr")
    a = ap.parse_args(argv)

    host, _, port = a.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    token = None if a.no_auth else (a.token or (None if a.token_file else "token"))
    srv = KubeAPIServer(host=host, port=int(port), tls=a.tls, token=token,
                        token_file=None if a.no_auth else a.token_file,
                        state_dir=a.state_dir, bookmark_interval=a.bookmark_interval,
                        history_limit=a.history_limit, min_request_timeout=a.min_request_timeout,
                        anonymous=a.anonymous, initial_rv=a.initial_rv, verbose=a.verbose)
    n = 0
    for p in a.load:
        n += srv.load(p)
    srv.start()
    print(f"kube-emulator: serving {srv.url} (state {srv.state_dir}, {n} objects loaded, "
          f"resourceVersion {srv.resource_version})", flush=True)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(0.5):
        pass
    srv.close()       # removes the state directory only when it was a temporary one
    print("kube-emulator: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
