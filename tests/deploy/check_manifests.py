#!/usr/bin/env python3
"""check_manifests.py SOURCE_DIR BUILD_DIR — the container and cluster files.

What the project defines is read from the project itself:
  ports   the coordinator's default endpoint (coordinator/config.c) and the
          metrics default (coordinator/fkd_coordinator.h);
  images  fedkd-ROLE:VERSION for each deploy/docker/ROLE.Dockerfile;
  paths   the folders and executables the Dockerfiles create.
Then:
  - every deploy/k8s/*.yaml parses as YAML, each document a named object
    that fits the Kubernetes API schema (when the optional PyPI package
    kubernetes-validate is installed), and names only those images, ports (numbers or names that resolve to
    them) and paths; ConfigMaps and Secrets it mounts are defined or are the
    documented key Secrets; configuration files inside ConfigMaps use only
    keys the coordinator or the client example defines;
  - deploy/config/coordinator.conf sets every key of the coordinator's key
    table and no other (pending keys may appear commented out);
  - the Dockerfiles are multi-stage on debian:12-slim, their build stage
    installs every -dev package deploy/install-deps.sh lists for the build,
    they run as a non-root user, expose only defined ports, and their
    runtime stage installs the Debian package of every shared library the
    built executable loads;
  - the Slurm script is valid shell."""
import glob
import os
import re
import shlex
import subprocess
import sys

try:
    import yaml
except ImportError:
    sys.exit("FAIL: python3 cannot import yaml: install Debian's python3-yaml "
             "(deploy/install-deps.sh does)")

SYSTEM_PATHS = {"/bin/sh"}          # the image's shell, used by the Job's script
KEY_SECRETS = {"fedkd-coordinator-keys", "fedkd-client-keys"}  # made from files (docs)
BASE_IMAGE = "debian:12-slim"
BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6"}           # in debian:12-slim already
errors = []


def fail(msg):
    errors.append(msg)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---- what the project defines -----------------------------------------------

def project_version(src):
    m = re.search(r"project\(fedkd VERSION ([0-9.]+)", read(os.path.join(src, "CMakeLists.txt")))
    return m.group(1)


def defined_ports(src):
    cfg = read(os.path.join(src, "coordinator", "config.c"))
    m = re.search(r'c->endpoint,[^"]*"tcp://[^:]+:(\d+)"', cfg)
    if not m:
        sys.exit("FAIL: no default tcp endpoint in coordinator/config.c")
    hdr = read(os.path.join(src, "coordinator", "fkd_coordinator.h"))
    n = re.search(r'FKD_COORD_METRICS_DEFAULT_LISTEN "[^"]*:(\d+)"', hdr)
    return {"wire": int(m.group(1)), "metrics": int(n.group(1))}


def dockerfiles(src):
    return {os.path.basename(p)[:-len(".Dockerfile")]: p
            for p in sorted(glob.glob(os.path.join(src, "deploy", "docker", "*.Dockerfile")))}


def dockerfile_paths(text):
    """Folders (install -d, VOLUME, WORKDIR of the runtime stage) and
    executables (install -D into /out, copied to the runtime stage) a
    Dockerfile's image provides."""
    paths = set()
    last = text[text.rfind("\nFROM "):]
    for m in re.finditer(r"install -d (?:-[og] \S+ |-m \S+ )*((?:/\S+ ?)+)", last):
        paths.update(m.group(1).split())
    for m in re.finditer(r"install -D -m \S+ \S+ /out(/\S+)", text):
        paths.add(m.group(1))
    for m in re.finditer(r'^(?:VOLUME \["|WORKDIR )(/[^"\s]+)', last, re.M):
        paths.add(m.group(1))
    return {p.rstrip("/") for p in paths}


def coordinator_keys(src):
    return set(re.findall(r'\{"([a-z_.0-9]+)", K_', read(os.path.join(src, "coordinator",
                                                                         "config.c"))))


def conf_keys(text):
    """(set keys, commented-out keys) of a "key = value" file."""
    keys, commented = [], []
    for line in text.splitlines():
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*=", line)
        if m:
            keys.append(m.group(1))
            continue
        m = re.match(r"\s*#\s*([a-z0-9_.]+) = \S", line)
        if m:
            commented.append(m.group(1))
    return keys, commented


# ---- checks ---------------------------------------------------------------------

def under(path, roots):
    return path in SYSTEM_PATHS or any(path == r or path.startswith(r + "/") for r in roots)


def check_paths(where, text, roots):
    for token in re.findall(r"(?<![\w$.:/-])(/[A-Za-z0-9_./@-]+)", text):
        token = token.rstrip(".")
        if not under(token, roots):
            fail(f"{where}: path {token} is not one the images define ({sorted(roots)})")


def check_conf_text(where, text, known, roots, ports):
    keys, _ = conf_keys(text)
    for k in keys:
        if k not in known:
            fail(f"{where}: key '{k}' is not a known setting")
    for m in re.finditer(r"tcp://[^:\s]+:(\d+)", text):
        if int(m.group(1)) != ports["wire"]:
            fail(f"{where}: endpoint port {m.group(1)} is not the coordinator's {ports['wire']}")
    for line in text.splitlines():
        m = re.match(r"\s*[A-Za-z0-9_.-]+\s*=\s*(/\S+)", line)
        if m and not under(m.group(1), roots):
            fail(f"{where}: path {m.group(1)} is not one the images define")


def containers(spec):
    return spec.get("initContainers", []) + spec.get("containers", [])


def pod_spec(doc):
    spec = doc.get("spec", {})
    if doc["kind"] in ("StatefulSet", "Deployment", "Job", "DaemonSet"):
        return spec["template"]["spec"]
    return None


def check_schemas(docs):
    """Strict validation against the Kubernetes API schemas, when the PyPI
    package kubernetes-validate is importable (it is optional: the checks
    below do not need it)."""
    try:
        import kubernetes_validate
    except ImportError:
        print("note: kubernetes-validate (PyPI) not installed: manifests not checked "
              "against the Kubernetes API schemas")
        return
    version = kubernetes_validate.latest_version()
    before = len(errors)
    for name, d in docs:
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{name}: {d['kind']} {d['metadata']['name']} does not fit the Kubernetes "
                 f"{version} schema: {e.message} at {'/'.join(str(p) for p in e.path)}")
    if len(errors) == before:
        print(f"manifests fit the Kubernetes {version} API schemas (strict)")


def check_manifests(src, images, ports, roots, coord_keys, client_keys):
    docs = []
    files = sorted(glob.glob(os.path.join(src, "deploy", "k8s", "*.yaml")))
    if not files:
        fail("no manifests in deploy/k8s/")
    for path in files:
        name = os.path.relpath(path, src)
        try:
            loaded = [d for d in yaml.safe_load_all(read(path)) if d is not None]
        except yaml.YAMLError as e:
            fail(f"{name}: not YAML: {e}")
            continue
        for d in loaded:
            if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind") or \
                    not d.get("metadata", {}).get("name"):
                fail(f"{name}: a document without apiVersion, kind and metadata.name")
                continue
            docs.append((name, d))
    check_schemas(docs)
    configmaps = {d["metadata"]["name"] for _, d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"] for _, d in docs if d["kind"] == "Secret"} | KEY_SECRETS
    port_numbers = set(ports.values())
    for name, d in docs:
        where = f"{name}: {d['kind']} {d['metadata']['name']}"
        if d["kind"] == "ConfigMap":
            for key, text in d.get("data", {}).items():
                if key.endswith(".conf"):
                    known = coord_keys if "coordinator" in key else client_keys
                    check_conf_text(f"{where} {key}", text, known, roots, ports)
                else:
                    check_paths(f"{where} {key}", text, roots)
        if d["kind"] == "Service":
            for p in d["spec"]["ports"]:
                if p["port"] not in port_numbers:
                    fail(f"{where}: port {p['port']} is not one fedkd defines {sorted(port_numbers)}")
        spec = pod_spec(d)
        if spec is None:
            continue
        named = {}
        for c in containers(spec):
            cw = f"{where} container {c['name']}"
            if c.get("image") not in images:
                fail(f"{cw}: image {c.get('image')} is not one deploy/docker/ builds {sorted(images)}")
            for p in c.get("ports", []):
                if p["containerPort"] not in port_numbers:
                    fail(f"{cw}: containerPort {p['containerPort']} is not one fedkd defines")
                named[p.get("name")] = p["containerPort"]
            for m in c.get("volumeMounts", []):
                if not under(m["mountPath"], roots):
                    fail(f"{cw}: mountPath {m['mountPath']} is not one the images define")
            check_paths(cw, " ".join(str(x) for x in c.get("command", []) + c.get("args", [])),
                        roots)
        for c in containers(spec):
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                for kind in ("httpGet", "tcpSocket"):
                    port = c.get(probe, {}).get(kind, {}).get("port")
                    if port is None:
                        continue
                    value = named.get(port) if isinstance(port, str) else port
                    if value not in port_numbers:
                        fail(f"{where}: {probe} port {port} is not one fedkd defines")
        for v in spec.get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                fail(f"{where}: volume {v['name']} mounts undefined ConfigMap {v['configMap']['name']}")
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                fail(f"{where}: volume {v['name']} mounts undefined Secret {v['secret']['secretName']}")
    return len(docs)


def check_example_configs(src, coord_keys):
    keys, commented = conf_keys(read(os.path.join(src, "deploy", "config", "coordinator.conf")))
    for k in sorted(set(keys) - coord_keys):
        fail(f"deploy/config/coordinator.conf: '{k}' is not in coordinator/config.c's key table")
    for k in sorted(coord_keys - set(keys)):
        fail(f"deploy/config/coordinator.conf: the coordinator's key '{k}' is missing")
    for k in sorted(set(commented) & coord_keys):
        fail(f"deploy/config/coordinator.conf: '{k}' is known now: uncomment it")
    client_keys, _ = conf_keys(read(os.path.join(src, "deploy", "config", "client.conf")))
    cli = glob.glob(os.path.join(src, "client", "cli", "*.c"))
    if cli:
        literals = set()
        for p in cli + glob.glob(os.path.join(src, "client", "*.c")):
            literals.update(re.findall(r'"([a-z_.0-9]+)"', read(p)))
        for k in client_keys:
            if k not in literals:
                fail(f"deploy/config/client.conf: key '{k}' appears nowhere in client/ sources")
    else:
        print("note: client/cli has no sources yet: client.conf keys not checked against code")
    return set(client_keys)


def needed_packages(exe):
    """{shared library the executable loads: set of Debian packages owning it},
    with one dpkg query for all (each query reads every package's file list)."""
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        subprocess.run(["readelf", "-d", exe], capture_output=True,
                                       text=True).stdout)
    resolved = dict(re.findall(r"^\s*(\S+) => (/\S+)", subprocess.run(
        ["ldd", exe], capture_output=True, text=True).stdout, re.M))
    candidates = {}
    for lib in needed:
        path = resolved.get(lib)
        if not path:
            continue
        for p in {path, os.path.realpath(path)}:
            for variant in {p, p.replace("/usr/lib/", "/lib/", 1), p.replace("/lib/", "/usr/lib/", 1)}:
                candidates[variant] = lib
    out = subprocess.run(["dpkg", "-S", *sorted(candidates)], capture_output=True,
                         text=True).stdout
    pkgs = {lib: set() for lib in needed}
    for line in out.splitlines():
        owners, _, path = line.partition(": ")
        if path in candidates:
            pkgs[candidates[path]].update(o.split(":")[0] for o in owners.split(", "))
    return pkgs


TEST_ONLY_DEV = {"libcmocka-dev", "libclang-rt-14-dev"}   # tests and fuzzing, not the build


def build_dev_packages(src):
    """The -dev packages deploy/install-deps.sh installs for building fedkd."""
    text = read(os.path.join(src, "deploy", "install-deps.sh"))
    listed = text.split("packages=(", 1)[1].split(")", 1)[0]
    words = re.sub(r"#[^\n]*", "", listed).split()
    return {w for w in words if w.endswith("-dev")} - TEST_ONLY_DEV


def check_dockerfiles(src, build, ports):
    port_numbers = set(ports.values())
    dev = build_dev_packages(src)
    for role, path in dockerfiles(src).items():
        text = read(path)
        name = os.path.relpath(path, src)
        froms = re.findall(r"^FROM (\S+)", text, re.M)
        if len(froms) < 2:
            fail(f"{name}: not multi-stage ({len(froms)} FROM)")
        for f in froms:
            if f != BASE_IMAGE:
                fail(f"{name}: FROM {f}, not {BASE_IMAGE}")
        last = text[text.rfind("\nFROM "):]
        first = text[:text.rfind("\nFROM ")].replace("\\\n", " ")
        for pkg in sorted(dev - set(first.split())):
            fail(f"{name}: the build stage does not install {pkg} (deploy/install-deps.sh does)")
        user = re.findall(r"^USER (\S+)", last, re.M)
        if not user or user[-1].split(":")[0] in ("0", "root"):
            fail(f"{name}: the runtime stage does not switch to a non-root USER")
        for p in re.findall(r"^EXPOSE (.+)$", text, re.M):
            for port in p.split():
                if int(port.split("/")[0]) not in port_numbers:
                    fail(f"{name}: EXPOSE {port} is not a port fedkd defines")
        installed = set()
        for m in re.finditer(r"apt-get install ([^&\n]*)", last.replace("\\\n", " ")):
            installed.update(w for w in m.group(1).split() if not w.startswith("-"))
        exe = os.path.join(build, "fedkd" if role == "coordinator" else f"fedkd-{role}")
        if not os.access(exe, os.X_OK):
            print(f"note: {os.path.basename(exe)} not built: {name}'s runtime packages not "
                  "checked against its shared libraries")
            continue
        for lib, owners in needed_packages(exe).items():
            if re.match(r"lib(asan|ubsan|lsan|tsan)\.so", lib):
                continue   # a sanitizer build's runtime, never in an image
            if not owners:
                fail(f"{name}: no Debian package owns {lib} (needed by {os.path.basename(exe)})")
            elif not owners & (installed | BASE_PACKAGES):
                fail(f"{name}: runtime stage lacks {' or '.join(sorted(owners))} for {lib}")


def main():
    src, build = sys.argv[1], sys.argv[2]
    version = project_version(src)
    ports = defined_ports(src)
    images, roots = set(), set()
    for role, path in dockerfiles(src).items():
        images.add(f"fedkd-{role}:{version}")
        roots |= dockerfile_paths(read(path))
    if not images:
        fail("no deploy/docker/*.Dockerfile")
    coord_keys = coordinator_keys(src)
    client_keys = check_example_configs(src, coord_keys)
    n = check_manifests(src, images, ports, roots, coord_keys, client_keys)
    check_dockerfiles(src, build, ports)
    for script in glob.glob(os.path.join(src, "deploy", "slurm", "*.sh")):
        r = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"{os.path.relpath(script, src)}: {r.stderr.strip()}")
    if errors:
        print("FAIL:\n" + "\n".join(errors))
        return 1
    print(f"manifests ok: {n} objects; images {sorted(images)}; ports {ports}; "
          f"paths {sorted(roots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
