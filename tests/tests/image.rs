//! The OCI image: built with buildah by the same code as `cargo xtask image`
//! (from the binaries under test, or `$XCNF_IMAGE` when given an archive
//! that command made), accepted by skopeo, unpacked with umoci, holding its
//! payload and exactly the libraries that payload loads, and running: the
//! unpacked agent, chrooted into the image's root filesystem as a container
//! runtime would start it, attaches to the NAT44 chain and translates
//! curl's traffic; the image's xcnfctl and bpftool read its state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use xcnf_tests::{
    agent::{Agent, Nat44, ReportOnPanic, Scratch, nat_chain_config, pin_dir},
    image::{self, AGENT_PATH, BPFTOOL_PATH, ImageOptions, OBJECT_PATH, Payload, XCNFCTL_PATH},
    netns::{CNF_OUTSIDE_IP, Chain, ChainSpec, Netns, SERVER_IP, unique_prefix},
};

const HTTP_ECHO: &str = env!("CARGO_BIN_EXE_xcnf-http-echo");
/// The dynamic loader's path as x86-64 binaries name it.
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
const TAG: &str = "test";

/// The image under test, in `scratch`: `$XCNF_IMAGE` (an oci-archive, whose
/// tag is `$XCNF_IMAGE_TAG`, default the crate version) or one built now.
fn image(scratch: &Scratch) -> (PathBuf, String) {
    if let Some(archive) = std::env::var_os("XCNF_IMAGE") {
        let tag = std::env::var("XCNF_IMAGE_TAG")
            .unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_owned());
        return (PathBuf::from(archive), tag);
    }
    let agent = xcnf_tests::agent::agent_binary();
    let bpftool = which("bpftool");
    let built = image::build(&ImageOptions {
        payload: Payload {
            xcnfctl: agent.with_file_name("xcnfctl"),
            agent,
            bpftool,
            object: xcnf_tests::ebpf_object(),
        },
        archive: scratch.path().join("xcnf.oci.tar"),
        tag: TAG.to_owned(),
        labels: vec![("org.opencontainers.image.title".into(), "xcnf".into())],
        work: scratch.path().join("build"),
    })
    .unwrap_or_else(|e| panic!("building the image: {e}"));
    (built.archive, TAG.to_owned())
}

fn which(bin: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{bin} not found (cargo xtask test installs it)"))
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `chroot rootfs program args`: the image's own binary with the image's
/// own loader and libraries, nothing from the host.
fn in_image(rootfs: &Path, program: &str, args: &[&str]) -> Output {
    output(Command::new("chroot").arg(rootfs).arg(program).args(args))
}

/// The image's loader's view of `binary`: the files it maps, as image paths.
fn loaded_libraries(rootfs: &Path, binary: &str) -> BTreeSet<PathBuf> {
    let text = ok(
        in_image(rootfs, LOADER, &["--list", binary]),
        &format!("{LOADER} --list {binary} in the image"),
    );
    assert!(!text.contains("not found"), "{binary}: {text}");
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once(" => ").map_or(l, |(_, p)| p);
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The file a path inside the image ends up at, following the image's own
/// symlinks (absolute ones relative to the image root).
fn resolve_in(rootfs: &Path, path: &Path) -> PathBuf {
    let mut cur = path.to_path_buf();
    for _ in 0..40 {
        let host = rootfs.join(cur.strip_prefix("/").unwrap_or(&cur));
        // Resolve the directories first, then the last component.
        let parent = cur.parent().map(Path::to_path_buf).unwrap_or_default();
        let parent_host = rootfs.join(parent.strip_prefix("/").unwrap_or(&parent));
        if let Ok(real_parent) = parent_host.canonicalize()
            && real_parent != parent_host
            && let Ok(rel) = real_parent.strip_prefix(rootfs)
        {
            cur = Path::new("/")
                .join(rel)
                .join(cur.file_name().unwrap_or_default());
            continue;
        }
        match std::fs::read_link(&host) {
            Ok(t) if t.is_absolute() => cur = t,
            Ok(t) => cur = parent.join(t),
            Err(_) => return cur,
        }
    }
    panic!("symlink loop at {}", path.display())
}

/// A launcher that runs the image's agent as a container runtime would: in
/// its own mount namespace, chrooted into the unpacked root filesystem,
/// with sysfs, bpffs, /proc, tmpfs /run and /dev (with the usual four
/// devices) and the test's scratch directory (config file, ready file)
/// mounted in. No XCNF_EBPF_OBJECT: the agent must find
/// the object the image ships.
fn chroot_launcher(rootfs: &Path) -> impl Fn(&Netns, &Scratch) -> Command + use<> {
    let rootfs = rootfs.to_path_buf();
    move |ns: &Netns, scratch: &Scratch| {
        let r = rootfs.display().to_string();
        let s = scratch.path().display().to_string();
        let d = rootfs.join(s.trim_start_matches('/'));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        // /sys is a fresh sysfs mounted from inside the cnf's network
        // namespace, so it shows that namespace's interfaces (and the CPU
        // list aya sizes per-CPU maps by), read-only as in a pod.
        let script = format!(
            "set -e
mount -t sysfs -o ro sysfs '{r}/sys'
mount --rbind /sys/fs/bpf '{r}/sys/fs/bpf'
mount -t proc proc '{r}/proc'
mount -t tmpfs -o mode=0755 tmpfs '{r}/run'
mount -t tmpfs -o mode=0755 tmpfs '{r}/dev'
for d in null zero random urandom; do touch '{r}/dev/'$d; mount --bind /dev/$d '{r}/dev/'$d; done
mount --bind '{s}' '{r}{s}'
exec chroot '{r}' {AGENT_PATH} \"$@\""
        );
        let mut c = ns.command("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(script)
            .arg("sh")
            .env_remove("XCNF_EBPF_OBJECT");
        c
    }
}

/// `program args` in the running agent's mount namespace, root directory
/// and network namespace: what `kubectl exec` into its container does.
fn exec_in_agent(agent: &Agent, program: &str, args: &[&str]) -> Output {
    output(
        Command::new("nsenter")
            .arg("--target")
            .arg(agent.pid().to_string())
            .args(["--mount", "--net", "--root", "--wd", "--"])
            .arg(program)
            .args(args),
    )
}

#[test]
fn image_is_complete_and_its_agent_translates() {
    let scratch = Scratch::new(&unique_prefix("img"));
    let (archive, tag) = image(&scratch);
    let reference = format!("oci-archive:{}:{tag}", archive.display());

    // A registry client accepts it, and it says how to run.
    let inspect = ok(
        output(Command::new("skopeo").args(["inspect", &reference])),
        "skopeo inspect",
    );
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Os"], "linux", "{inspect:#}");
    assert_eq!(inspect["Labels"]["org.opencontainers.image.title"], "xcnf");
    let config = ok(
        output(Command::new("skopeo").args(["inspect", "--config", &reference])),
        "skopeo inspect --config",
    );
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!([AGENT_PATH]),
        "{config:#}"
    );
    // No default arguments: the pod's `args` are the agent's only ones.
    assert!(config["config"]["Cmd"].is_null(), "{config:#}");
    // `kubectl exec … -- bpftool` and `-- xcnfctl` find them on PATH.
    assert!(
        config["config"]["Env"]
            .as_array()
            .is_some_and(|e| e.iter().any(|v| v == "PATH=/usr/sbin:/usr/bin")),
        "{config:#}"
    );

    let rootfs = image::unpack(&archive, &tag, &scratch.path().join("unpacked"))
        .unwrap_or_else(|e| panic!("unpacking: {e}"));

    // The payload runs from the image, with the image's libraries only.
    let version = ok(in_image(&rootfs, AGENT_PATH, &["--version"]), "xcnf-agent");
    assert!(version.starts_with("xcnf-agent "), "{version}");
    let help = ok(
        in_image(&rootfs, XCNFCTL_PATH, &["--help"]),
        "xcnfctl --help",
    );
    assert!(help.contains("nat"), "{help}");
    let bpftool = ok(in_image(&rootfs, BPFTOOL_PATH, &["version"]), "bpftool");
    assert!(bpftool.contains("bpftool v"), "{bpftool}");
    assert!(rootfs.join(OBJECT_PATH.trim_start_matches('/')).is_file());

    // Exactly the libraries: every file in the image is the payload or
    // something the image's loader maps for it (symlinks leading there
    // aside).
    let mut needed: BTreeSet<PathBuf> = [AGENT_PATH, XCNFCTL_PATH, BPFTOOL_PATH, OBJECT_PATH]
        .iter()
        .map(PathBuf::from)
        .collect();
    for bin in [AGENT_PATH, XCNFCTL_PATH, BPFTOOL_PATH] {
        for lib in loaded_libraries(&rootfs, bin) {
            needed.insert(resolve_in(&rootfs, &lib));
        }
    }
    let entries = image::list_entries(&rootfs).unwrap_or_else(|e| panic!("{e}"));
    let files: BTreeSet<PathBuf> = entries
        .iter()
        .filter(|p| {
            rootfs
                .join(p.strip_prefix("/").unwrap_or(p))
                .symlink_metadata()
                .is_ok_and(|m| m.is_file())
        })
        .cloned()
        .collect();
    assert_eq!(
        files, needed,
        "the image's files are not exactly the payload and its libraries"
    );

    // The unpacked agent on the demo chain.
    let prefix = unique_prefix("imc");
    let chain = Chain::build(&prefix, &ChainSpec::nat());
    let nat = Nat44::default().pool(CNF_OUTSIDE_IP, "80.80.80.105", None);
    let launch = chroot_launcher(&rootfs);
    let agent = Agent::start_via(
        &chain.cnf,
        &prefix,
        &nat_chain_config(&prefix, "{hook: tc}", &nat),
        &[],
        &launch,
    );
    let _report = ReportOnPanic {
        agent: &agent,
        cnf: &chain.cnf,
        ifnames: vec!["c0", "c1"],
        namespaces: chain.namespaces(),
    };
    assert!(
        agent.log().contains(OBJECT_PATH),
        "the agent did not load the image's object:\n{}",
        agent.log()
    );
    for ifname in ["c0", "c1"] {
        assert!(
            !chain.cnf.attached_programs(ifname).is_empty(),
            "nothing attached to {ifname}"
        );
    }
    assert!(pin_dir(&prefix).join("nat_sessions").exists());

    let _http = chain.start_http_server(Path::new(HTTP_ECHO));
    let seen = chain
        .client
        .curl(&format!("http://{SERVER_IP}:8080/"), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seen, CNF_OUTSIDE_IP, "the web server saw {seen}");

    // The image's tools against the running agent, from inside its
    // "container".
    let sessions = ok(
        exec_in_agent(
            &agent,
            XCNFCTL_PATH,
            &["nat", "sessions", "--instance", &prefix],
        ),
        "xcnfctl nat sessions in the container",
    );
    assert!(sessions.contains(":8080"), "{sessions}");
    let pinned = format!("/sys/fs/bpf/xcnf/{prefix}/nat_sessions");
    let dump = ok(
        exec_in_agent(
            &agent,
            BPFTOOL_PATH,
            &["-j", "map", "dump", "pinned", &pinned],
        ),
        "bpftool map dump in the container",
    );
    let dump: serde_json::Value =
        serde_json::from_str(&dump).unwrap_or_else(|e| panic!("bpftool json: {e}: {dump}"));
    assert!(
        dump.as_array().is_some_and(|a| !a.is_empty()),
        "bpftool shows no session: {dump:#}"
    );
}
