//! The container image as `.ci/build-image` builds it (the archive named by
//! GROUPBAN_IMAGE_ARCHIVE): its configuration against the Dockerfile and
//! the chart, its root's contents, and its entrypoint run inside its own
//! root (bubblewrap: only the image's files and libraries visible, its
//! root read-only as the chart makes it) as user 65532:
//! `--version`, `--help`, the simulator and `apply` over loopback, `run`
//! as in a pod against the local control plane, and TLS to an IM endpoint
//! whose certificate comes from a private CA handed over as the README
//! says.
//!
//! Without GROUPBAN_IMAGE_ARCHIVE these skip with a notice; CI sets it and
//! GROUPBAN_REQUIRE_IMAGE=1, so a missing archive or tool fails there.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const ENTRYPOINT: &str = "/usr/local/bin/groupban-operator";

/// The archive unpacked once per test binary: its layout, its config and
/// its root.
struct Image {
    config: Value,
    manifest_digest: String,
    rootfs: PathBuf,
    /// Every path of the root with its mtime, as unpacked (before this
    /// test made the mount points a runtime provides).
    mtimes: Vec<(PathBuf, i64)>,
    _dir: tempfile::TempDir,
}

fn require_or_skip(test: &str, why: &str) -> Option<()> {
    assert!(std::env::var_os("GROUPBAN_REQUIRE_IMAGE").is_none(), "{test}: {why}");
    eprintln!("SKIPPED {test}: {why}");
    None
}

fn image(test: &str) -> Option<&'static Image> {
    static IMAGE: OnceLock<Option<Image>> = OnceLock::new();
    let Some(archive) = std::env::var_os("GROUPBAN_IMAGE_ARCHIVE") else {
        return require_or_skip(test, "no image (GROUPBAN_IMAGE_ARCHIVE=$(bash .ci/build-image | tail -n 1))")
            .and(None);
    };
    IMAGE.get_or_init(|| Some(unpack(Path::new(&archive)))).as_ref()
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').expect("algorithm:hex");
    layout.join("blobs").join(algorithm).join(hex)
}

fn unpack(archive: &Path) -> Image {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run_ok(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&layout));
    let read = |path: PathBuf| -> Value { serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap() };
    let index = read(layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("index.json lists manifests");
    assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
    let manifest_digest = manifests[0]["digest"].as_str().unwrap().to_string();
    let manifest = read(blob(&layout, &manifest_digest));
    let config = read(blob(&layout, manifest["config"]["digest"].as_str().unwrap()));
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
        let file = blob(&layout, layer["digest"].as_str().unwrap());
        run_ok(Command::new("tar").arg("--numeric-owner").arg("-xzpf").arg(&file).arg("-C").arg(&rootfs));
    }
    use std::os::unix::fs::MetadataExt;
    let mtimes = walk(&rootfs)
        .into_iter()
        .map(|path| {
            let mtime = std::fs::symlink_metadata(&path).unwrap().mtime();
            (path.strip_prefix(&rootfs).unwrap().to_path_buf(), mtime)
        })
        .collect();
    // Mount points a container runtime provides; the image has none.
    for point in ["proc", "dev", "var/run/secrets/kubernetes.io/serviceaccount", "etc/groupban/ca"] {
        std::fs::create_dir_all(rootfs.join(point)).unwrap();
    }
    Image { config, manifest_digest, rootfs, mtimes, _dir: dir }
}

/// Everything needed to run a program of the image in its own root.
fn sandbox_available(test: &str) -> Option<()> {
    let works = Command::new("setpriv")
        .args(["--reuid", "65532", "--regid", "65532", "--clear-groups", "bwrap", "--ro-bind", "/", "/", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if works {
        Some(())
    } else {
        require_or_skip(test, "needs setpriv and bwrap (Debian: util-linux, bubblewrap), as root")
    }
}

/// The entrypoint with `args`, in the image's root, as user 65532, with the
/// image's environment plus `env`, and `binds` (host path, path inside)
/// mounted read-only: as a container runtime would run it.
fn in_image(image: &Image, binds: &[(&Path, &str)], env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut command = Command::new("setpriv");
    command.args(["--reuid", "65532", "--regid", "65532", "--clear-groups", "bwrap"]);
    command.arg("--ro-bind").arg(&image.rootfs).arg("/");
    command.args(["--proc", "/proc", "--dev", "/dev"]);
    // The chart's pod has a read-only root and no /tmp volume: a writable
    // /tmp only where a test puts its files.
    if binds.iter().any(|(_, inside)| inside.starts_with("/tmp/")) {
        command.args(["--tmpfs", "/tmp"]);
    }
    command.args(["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--clearenv"]);
    for (host, inside) in binds {
        command.arg("--ro-bind").arg(host).arg(inside);
    }
    for entry in image.config["config"]["Env"].as_array().into_iter().flatten() {
        let (key, value) = entry.as_str().unwrap().split_once('=').unwrap();
        command.args(["--setenv", key, value]);
    }
    for (key, value) in env {
        command.args(["--setenv", key, value]);
    }
    command.args(["--setenv", "RUST_LOG", "info", "--"]).arg(ENTRYPOINT).args(args);
    command
}

/// The final stage of the Dockerfile: its instructions, continuation lines
/// joined, comments dropped.
fn dockerfile_final_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let mut stages: Vec<Vec<(String, String)>> = vec![vec![]];
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(part) = line.strip_suffix('\\') {
            pending.push_str(part);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let (keyword, rest) = pending.split_once(' ').unwrap_or((pending.as_str(), ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stages.push(vec![]);
        }
        stages.last_mut().unwrap().push((keyword, rest.trim().to_string()));
        pending.clear();
    }
    stages.pop().unwrap()
}

/// `KEY="value with spaces" OTHER=plain` pairs, as ENV and LABEL write them.
fn pairs(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').unwrap_or_else(|| panic!("KEY=VALUE expected in {text}"));
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').expect("closing quote"),
            None => after.split_once(' ').unwrap_or((after, "")),
        };
        out.push((key.trim().to_string(), value.to_string()));
        rest = after.trim();
    }
    out
}

/// The Dockerfile and the daemonless build describe one image: the same
/// user, entrypoint, arguments, port, environment and labels, over the same
/// root recipe; and the chart runs it as it is (its entrypoint, its port,
/// its user).
#[test]
fn the_image_is_the_one_the_dockerfile_describes() {
    let Some(image) = image("the_image_is_the_one_the_dockerfile_describes") else {
        return;
    };
    let config = &image.config["config"];
    let stage = dockerfile_final_stage();
    let find = |keyword: &str| -> Vec<&str> {
        stage.iter().filter(|(k, _)| k == keyword).map(|(_, rest)| rest.as_str()).collect()
    };
    assert_eq!(find("FROM"), ["scratch"], "the final stage starts from nothing");
    assert_eq!(find("COPY"), ["--from=root /rootfs/ /"], "and copies the assembled root");
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert!(dockerfile.contains("bash /image/assemble-root /debs /groupban-operator /rootfs"), "same root recipe");
    assert!(dockerfile.contains("apt-get download $(grep -v '^#' /image/packages)"), "same packages");

    assert_eq!(config["User"], find("USER")[0]);
    assert_eq!(config["User"], "65532:65532");
    let entrypoint: Value = serde_json::from_str(find("ENTRYPOINT")[0]).unwrap();
    let cmd: Value = serde_json::from_str(find("CMD")[0]).unwrap();
    assert_eq!((&config["Entrypoint"], &config["Cmd"]), (&entrypoint, &cmd));
    assert_eq!(entrypoint, json!([ENTRYPOINT]));
    let ports: Vec<String> =
        find("EXPOSE").iter().flat_map(|p| p.split_whitespace()).map(|p| format!("{p}/tcp")).collect();
    let exposed: Vec<String> = config["ExposedPorts"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(exposed, ports);
    let env: Vec<String> = config["Env"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect();
    let declared: Vec<String> = find("ENV").iter().flat_map(|e| pairs(e)).map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(env, declared);

    let labels = config["Labels"].as_object().unwrap();
    let declared = find("LABEL").iter().flat_map(|l| pairs(l)).collect::<Vec<_>>();
    assert_eq!(labels.len(), declared.len(), "{labels:?}");
    let created = image.config["created"].as_str().unwrap();
    for (key, value) in declared {
        let actual = labels[&key].as_str().unwrap();
        match value.as_str() {
            "${VERSION}" => assert_eq!(actual, env!("CARGO_PKG_VERSION")),
            "${REVISION}" => assert!(actual.len() == 40 && actual.chars().all(|c| c.is_ascii_hexdigit()), "{actual}"),
            "${CREATED}" => assert_eq!(actual, created),
            "${SOURCE}" => assert!(!actual.is_empty() && !actual.contains('@'), "no credentials: {actual}"),
            literal => assert_eq!(actual, literal, "{key}"),
        }
    }
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");

    // The chart: no command of its own (the entrypoint runs), `run` first,
    // the metrics port the image exposes, the image's user.
    let deployment = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/groupban-operator/templates/deployment.yaml"
    ))
    .unwrap();
    assert!(!deployment.contains("command:"), "the chart must not replace the entrypoint");
    assert!(deployment.contains("args:\n            - run\n"), "the chart's first argument is `run`");
    let values =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/charts/groupban-operator/values.yaml")).unwrap();
    assert!(values.contains("  port: 8080"), "the chart's metrics port is the exposed one");
    assert!(deployment.contains("runAsUser: 65532") && deployment.contains("runAsGroup: 65532"));
}

/// What is in the root: the nonroot user, the CA bundle, the Debian
/// packages recorded for scanners, the binary with its dependency list;
/// what is not: a shell, a package manager; every timestamp the build's.
#[test]
fn the_root_holds_what_distroless_holds_and_nothing_more() {
    let Some(image) = image("the_root_holds_what_distroless_holds_and_nothing_more") else {
        return;
    };
    let root = &image.rootfs;
    let text = |path: &str| std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("/{path}: {e}"));
    assert!(text("etc/passwd").lines().any(|l| l.starts_with("nonroot:x:65532:65532:")));
    assert!(text("etc/group").lines().any(|l| l.starts_with("nonroot:x:65532:")));
    assert!(text("etc/os-release").contains("VERSION_ID=\"12\""));
    assert!(text("etc/ssl/certs/ca-certificates.crt").matches("BEGIN CERTIFICATE").count() > 100);
    for package in ["libc6", "libgcc-s1", "gcc-12-base", "ca-certificates", "base-files"] {
        let control = text(&format!("var/lib/dpkg/status.d/{package}"));
        assert!(control.contains(&format!("Package: {package}")) && control.contains("Version: "), "{control}");
        // Each package's licence ships with it (libgcc-s1's through its
        // documentation link to gcc-12-base).
        let copyright = root.join(format!("usr/share/doc/{package}"));
        let copyright = match std::fs::read_link(&copyright) {
            Ok(target) => root.join("usr/share/doc").join(target).join("copyright"),
            Err(_) => copyright.join("copyright"),
        };
        assert!(copyright.is_file(), "no licence for {package}: {}", copyright.display());
    }
    for absent in ["bin/sh", "bin/bash", "usr/bin/apt", "usr/bin/dpkg", "usr/bin/perl", "usr/sbin"] {
        assert!(!root.join(absent).exists(), "/{absent} is in the image");
    }
    use std::os::unix::fs::MetadataExt;
    let home = std::fs::metadata(root.join("home/nonroot")).unwrap();
    assert_eq!((home.uid(), home.gid()), (65532, 65532));
    let binary = std::fs::read(root.join(ENTRYPOINT.trim_start_matches('/'))).unwrap();
    assert!(binary.windows(b".dep-v0".len()).any(|w| w == b".dep-v0"), "cargo auditable's section is kept");
    assert!(binary.len() < 40 << 20, "stripped: {} bytes", binary.len());
    // The build's paths are mapped away.
    let checkout = env!("CARGO_MANIFEST_DIR").as_bytes();
    assert!(!binary.windows(checkout.len()).any(|w| w == checkout), "the checkout's path is in the binary");

    let created = image.config["created"].as_str().unwrap();
    let epoch = k8s_openapi::jiff::Timestamp::from_str_strict(created).as_second();
    for (path, mtime) in &image.mtimes {
        assert_eq!(*mtime, epoch, "/{} has another time than the build's", path.display());
    }
    let checked = image.mtimes.len();
    assert!(checked > 20, "{checked} files");
}

trait StrictTimestamp {
    fn from_str_strict(text: &str) -> k8s_openapi::jiff::Timestamp;
}

impl StrictTimestamp for k8s_openapi::jiff::Timestamp {
    fn from_str_strict(text: &str) -> k8s_openapi::jiff::Timestamp {
        text.parse().unwrap_or_else(|e| panic!("created {text:?}: {e}"))
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// `--version` and `--help` from inside the image.
#[test]
fn the_entrypoint_answers_version_and_help_inside_the_image() {
    let test = "the_entrypoint_answers_version_and_help_inside_the_image";
    let (Some(image), Some(())) = (image(test), sandbox_available(test)) else {
        return;
    };
    let version = run_ok(&mut in_image(image, &[], &[], &["--version"]));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let help = run_ok(&mut in_image(image, &[], &[], &["--help"]));
    for command in ["run", "apply", "simulate", "demo"] {
        assert!(help.contains(command), "{help}");
    }
    // The host's files are not there: only the image's.
    let host = in_image(image, &[], &[], &["apply", "-f", env!("CARGO_MANIFEST_DIR")]).output().unwrap();
    assert_eq!(host.status.code(), Some(2), "{}", String::from_utf8_lossy(&host.stderr));
    eprintln!("image {}", image.manifest_digest);
}

/// A process of the image, killed with the test.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `simulate` inside the image and returns its URL.
fn simulator_in_image(image: &Image, seed_dir: &Path) -> (Running, String) {
    let mut command = in_image(
        image,
        &[(seed_dir, "/tmp/seed")],
        &[("GROUPBAN_SECRET_KEY", KEY)],
        &["simulate", "--sdkappid", &SDKAPPID.to_string(), "--seed-file", "/tmp/seed/groups.yaml"],
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = command.stdout(Stdio::piped()).stderr(log.reopen().unwrap()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| {
        panic!("simulate said {line:?}: {}", std::fs::read_to_string(log.path()).unwrap_or_default())
    });
    let url = url.to_string();
    (running, url)
}

/// `apply` of `documents` inside the image; returns its output.
fn apply_in_image(
    image: &Image,
    documents: &[String],
    env: &[(&str, &str)],
    binds: &[(&Path, &str)],
) -> std::process::Output {
    let manifests = apply::manifests_dir(documents);
    let mut all_binds = vec![(manifests.path(), "/tmp/manifests")];
    all_binds.extend_from_slice(binds);
    in_image(image, &all_binds, env, &["apply", "-f", "/tmp/manifests", "-o", "json"]).output().unwrap()
}

/// The simulator and `apply` against it, both inside the image, over
/// loopback: the members are unbanned and the policy is Ready.
#[test]
fn the_simulator_and_apply_run_inside_the_image() {
    let test = "the_simulator_and_apply_run_inside_the_image";
    let (Some(image), Some(())) = (image(test), sandbox_available(test)) else {
        return;
    };
    let seed = tempfile::tempdir().unwrap();
    std::fs::write(seed.path().join("groups.yaml"), seed_banned(&[("room", 25)])).unwrap();
    let (_simulator, url) = simulator_in_image(image, seed.path());
    let documents =
        [apply::secret_yaml(&url, ADMIN, KEY, SDKAPPID), apply::policy_yaml("p", "room", &members("m", 25))];
    let output = apply_in_image(image, &documents, &[], &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let items = apply::items(&output);
    assert_eq!(apply::condition(&items[0], "Ready").0, "True", "{items:?}");
    assert_eq!(items[0]["status"]["unbannedMembers"].as_array().unwrap().len(), 25);
}

/// TLS to an IM endpoint whose certificate a private CA signed: refused
/// with the image's public roots alone, accepted once the CA is mounted in
/// a directory named by SSL_CERT_DIR (the README's way).
#[tokio::test]
async fn a_private_ca_is_trusted_once_mounted_as_the_readme_says() {
    let test = "a_private_ca_is_trusted_once_mounted_as_the_readme_says";
    let (Some(image), Some(())) = (image(test), sandbox_available(test)) else {
        return;
    };
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let pki = tempfile::tempdir().unwrap();
    private_ca(pki.path());
    let tls = tls_proxy(pki.path(), sim.addr).await;
    let endpoint = format!("https://127.0.0.1:{}", tls.port());
    let documents =
        [apply::secret_yaml(&endpoint, ADMIN, KEY, SDKAPPID), apply::policy_yaml("p", "room", &members("m", 5))];
    let refused = {
        let documents = documents.clone();
        tokio::task::spawn_blocking(move || apply_in_image(image, &documents, &[], &[])).await.unwrap()
    };
    let items = apply::items(&refused);
    let (ready, reason, message) = apply::condition(&items[0], "Ready");
    assert_eq!((ready, reason), ("False", "TransportError"), "{message}");
    assert!(message.to_lowercase().contains("certificate"), "{message}");

    let ca_dir = pki.path().join("trusted");
    let trusted = tokio::task::spawn_blocking(move || {
        apply_in_image(image, &documents, &[("SSL_CERT_DIR", "/etc/groupban/ca")], &[(&ca_dir, "/etc/groupban/ca")])
    })
    .await
    .unwrap();
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    let items = apply::items(&trusted);
    assert_eq!(apply::condition(&items[0], "Ready").0, "True", "{items:?}");
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA (trusted/ca.crt) and a certificate for 127.0.0.1 it signed
/// (server.crt, server.key).
fn private_ca(dir: &Path) {
    std::fs::create_dir(dir.join("trusted")).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "trusted/ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=groupban test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "trusted/ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

/// TLS on a free loopback port in front of `backend` (plain HTTP).
struct TlsProxy(std::net::SocketAddr, tokio::task::JoinHandle<()>);

impl TlsProxy {
    fn port(&self) -> u16 {
        self.0.port()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.1.abort();
    }
}

async fn tls_proxy(pki: &Path, backend: std::net::SocketAddr) -> TlsProxy {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    groupban_operator::install_crypto_provider();
    let certs: Vec<CertificateDer> =
        CertificateDer::pem_file_iter(pki.join("server.crt")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(pki.join("server.key")).unwrap();
    let config =
        tokio_rustls::rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(socket)).await
                else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    TlsProxy(addr, task)
}

/// `run` as it runs in a pod: the ServiceAccount's files at their in-pod
/// path, KUBERNETES_SERVICE_HOST and _PORT, no kubeconfig, inside the
/// image as 65532, against the local control plane with the chart's
/// ServiceAccount: the policy becomes Ready.
#[tokio::test]
async fn run_inside_the_image_as_in_a_pod_makes_a_policy_ready() {
    let test = "run_inside_the_image_as_in_a_pod_makes_a_policy_ready";
    let (Some(image), Some(())) = (image(test), sandbox_available(test)) else {
        return;
    };
    let Some(plane) = support::control_plane::for_test(test).await else {
        return;
    };
    let release = plane.default_release();
    let cluster = support::cluster::Cluster::start().await;
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    cluster.put_secret("groupban-credentials", &sim.base_url(), KEY).await;
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 5)})).await;

    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("token"), &release.token).unwrap();
    std::fs::copy(&plane.ca, files.path().join("ca.crt")).unwrap();
    std::fs::write(files.path().join("namespace"), &release.namespace).unwrap();
    // The ServiceAccount files are readable by the pod's user, as the
    // kubelet's projected volume makes them.
    for file in ["token", "ca.crt", "namespace"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(files.path().join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(files.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = plane.port.to_string();
    let lease = format!("in-image-{}", rand::random::<u32>());
    let mut command = in_image(
        image,
        &[(files.path(), "/var/run/secrets/kubernetes.io/serviceaccount")],
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", &port),
            ("POD_NAMESPACE", &cluster.lease_namespace),
        ],
        &[
            "run",
            "--namespace",
            &cluster.namespace,
            "--leader-election-id",
            &lease,
            "--metrics-bind-address",
            "127.0.0.1:0",
        ],
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = command.stdout(Stdio::null()).stderr(log.reopen().unwrap()).spawn().unwrap();
    let _operator = Running(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let policy = cluster.policies().get("p").await.unwrap();
        if support::cluster::is_ready(&policy) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not Ready inside the image: {:?}\n{}",
            policy.status,
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let user = release.user();
    assert!(
        plane.requests_by(&user).iter().any(|r| r.namespace == cluster.namespace && r.subresource == "status"),
        "the status was written as {user}, the chart's ServiceAccount"
    );
    cluster.cleanup().await;
}
