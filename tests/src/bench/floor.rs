//! The kernel's floor under an established translated packet: a program
//! that does only what no translator on these hooks can avoid, run in the
//! same test-run loop on the same frame and session table as xcnf.
//!
//! - the session lookup, in xcnf's own session table, for the measured
//!   flow's key;
//! - TC: one `bpf_l4_csum_replace` for the source address (an skb may carry
//!   `CHECKSUM_PARTIAL`, which only the kernel's helper knows; see
//!   `ebpf/xcnf-ebpf/src/pkt.rs`). XDP fixes checksums arithmetically, which
//!   is part of xcnf's own work;
//! - the redirect xcnf makes: `bpf_redirect` on TC, `bpf_redirect_map`
//!   through xcnf's devmap on XDP.
//!
//! Everything else, header validation, the translation, TTL and MACs,
//! counters, clock and caches, is xcnf's own work: the difference between
//! the two rows.
//!
//! The programs are a few instructions, assembled here and loaded with the
//! `bpf` syscall directly: aya loads only ELF objects, and shipping them in
//! xcnf's object would put benchmark code in the product.
//!
//! The XDP floor is attached to a veth of its own, as xcnf's program is
//! (see `keep_in_xdp_dispatcher` in `prog.rs`): a test run of a program the
//! kernel's XDP dispatcher does not hold patches the dispatcher in and out
//! around every call, which also slowed xcnf's calls in between by ~45 ns.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use aya::maps::Map;
use xcnf_common::{maps, nat::SessionKey};

use crate::testrun::{Datapath, Hook};

const BPF_MAP_LOOKUP_ELEM_HELPER: i32 = 1;
const BPF_L4_CSUM_REPLACE: i32 = 11;
const BPF_REDIRECT: i32 = 23;
const BPF_REDIRECT_MAP: i32 = 51;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// The veth pair the XDP floor is attached to (its peer, as for xcnf).
const XDP_FLOOR_VETH: (&str, &str) = ("fl0", "fl1");
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;

const BPF_F_PSEUDO_HDR: i32 = 0x10;
const BPF_F_MARK_MANGLED_0: i32 = 0x20;
const BPF_PSEUDO_MAP_FD: u8 = 1;

/// Offset of the UDP checksum in an untagged IPv4 frame without options.
const UDP_CSUM_OFF: i32 = 14 + 20 + 6;

/// Verdicts of a hit: TC_ACT_REDIRECT and XDP_REDIRECT.
const TC_ACT_REDIRECT: u32 = 7;
const XDP_REDIRECT: u32 = 4;
/// A miss (or a refused checksum update) ends with TC_ACT_SHOT or
/// XDP_ABORTED, so a floor that did less than its work fails its check
/// instead of measuring less.
const TC_ACT_SHOT: i32 = 2;
const XDP_ABORTED: i32 = 0;

/// One eBPF instruction.
#[derive(Clone, Copy)]
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R10: u8 = 10;

const fn mov64_reg(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
const fn mov64_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
const fn add64_imm(dst: u8, imm: i32) -> Insn {
    insn(0x07, dst, 0, 0, imm)
}
const fn st_w(dst: u8, off: i16, imm: i32) -> Insn {
    insn(0x62, dst, 0, off, imm)
}
const fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x55, dst, 0, off, imm)
}
const fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x15, dst, 0, off, imm)
}
const fn call(helper: i32) -> Insn {
    insn(0x85, 0, 0, 0, helper)
}
const fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}
/// `dst = map` (two instructions).
fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
    [
        insn(0x18, dst, BPF_PSEUDO_MAP_FD, 0, fd),
        insn(0, 0, 0, 0, 0),
    ]
}

/// The floor program of one hook, loaded.
pub struct Floor {
    prog: OwnedFd,
    hook: Hook,
    /// The XDP floor's attachment; closing it detaches.
    _link: Option<OwnedFd>,
}

/// The raw fd of one of `dp`'s maps.
fn map_fd(dp: &Datapath, name: &str) -> Result<i32, String> {
    let data = match dp.ebpf.map(name) {
        Some(Map::LruHashMap(d) | Map::HashMap(d) | Map::DevMapHash(d)) => d,
        Some(_) => return Err(format!("map {name} has an unexpected type")),
        None => return Err(format!("no map {name}")),
    };
    Ok(data.fd().as_fd().as_raw_fd())
}

impl Floor {
    /// Loads `hook`'s floor: look `key` up in `dp`'s session table, then (TC)
    /// fix the UDP checksum for `from` → `to` as the source address, then
    /// redirect to `out`.
    pub fn load(
        dp: &Datapath,
        hook: Hook,
        key: &SessionKey,
        (from, to): ([u8; 4], [u8; 4]),
        out: u32,
    ) -> Result<Self, String> {
        let sessions = map_fd(dp, maps::NAT_SESSIONS.object)?;
        // SAFETY: SessionKey is plain old data of 16 bytes.
        let key: [u8; 16] = unsafe { std::mem::transmute_copy(key) };
        let word = |i: usize| i32::from_ne_bytes([key[i], key[i + 1], key[i + 2], key[i + 3]]);
        let out = i32::try_from(out).map_err(|_| format!("ifindex {out} out of range"))?;
        let miss = match hook {
            Hook::Tc => TC_ACT_SHOT,
            Hook::Xdp => XDP_ABORTED,
        };
        let mut p = vec![mov64_reg(R6, R1)];
        for (i, off) in [(0, -16), (4, -12), (8, -8), (12, -4)] {
            p.push(st_w(R10, off, word(i)));
        }
        p.extend(ld_map_fd(R1, sessions));
        p.extend([
            mov64_reg(R2, R10),
            add64_imm(R2, -16),
            call(BPF_MAP_LOOKUP_ELEM_HELPER),
            jne_imm(R0, 0, 2),
            mov64_imm(R0, miss),
            exit(),
        ]);
        match hook {
            Hook::Tc => {
                p.extend([
                    mov64_reg(R1, R6),
                    mov64_imm(R2, UDP_CSUM_OFF),
                    mov64_imm(R3, i32::from_ne_bytes(from)),
                    mov64_imm(R4, i32::from_ne_bytes(to)),
                    mov64_imm(R5, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 4),
                    call(BPF_L4_CSUM_REPLACE),
                    // A refused checksum update would make the floor
                    // cheaper than it is: it fails the check instead.
                    jeq_imm(R0, 0, 2),
                    mov64_imm(R0, miss),
                    exit(),
                    mov64_imm(R1, out),
                    mov64_imm(R2, 0),
                    call(BPF_REDIRECT),
                    exit(),
                ]);
            }
            Hook::Xdp => {
                p.extend(ld_map_fd(R1, map_fd(dp, maps::TX_PORTS.object)?));
                p.extend([
                    mov64_imm(R2, out),
                    mov64_imm(R3, 0),
                    call(BPF_REDIRECT_MAP),
                    exit(),
                ]);
            }
        }
        let prog_type = match hook {
            Hook::Tc => BPF_PROG_TYPE_SCHED_CLS,
            Hook::Xdp => BPF_PROG_TYPE_XDP,
        };
        let prog = prog_load(prog_type, &p)?;
        let link = match hook {
            Hook::Tc => None,
            Hook::Xdp => Some(attach_xdp(&prog)?),
        };
        Ok(Floor {
            prog,
            hook,
            _link: link,
        })
    }

    /// One test run of `frame`, `repeat` times: the kernel's ns per packet,
    /// after checking that it redirected.
    pub fn run(&self, frame: &[u8], repeat: u32) -> Result<f64, String> {
        let (code, ns) = test_run(&self.prog, frame, repeat)?;
        let want = match self.hook {
            Hook::Tc => TC_ACT_REDIRECT,
            Hook::Xdp => XDP_REDIRECT,
        };
        if code != want {
            return Err(format!(
                "floor returned {code}, not the redirect {want} (the session lookup missed, or the checksum helper refused)"
            ));
        }
        Ok(f64::from(ns))
    }
}

/// `union bpf_attr` as far as the commands here use it, zero elsewhere.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes([
            self.0[off],
            self.0[off + 1],
            self.0[off + 2],
            self.0[off + 3],
        ])
    }
}

fn sys_bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, zero-padded bpf_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn prog_load(prog_type: u32, insns: &[Insn]) -> Result<OwnedFd, String> {
    let license = c"Dual MIT/GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = Attr::new();
    attr.u32(0, prog_type)
        .u32(4, u32::try_from(insns.len()).unwrap_or(u32::MAX))
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1)
        .u32(28, u32::try_from(log.len()).unwrap_or(u32::MAX))
        .u64(32, log.as_mut_ptr() as u64);
    match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel just returned this fd to us, owned by no one else.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(format!(
                "loading the floor program: {e}\n{}",
                String::from_utf8_lossy(&log[..end])
            ))
        }
    }
}

/// Attaches `prog` in driver mode to the peer of a veth pair made for it in
/// the benchmark's namespace.
fn attach_xdp(prog: &OwnedFd) -> Result<OwnedFd, String> {
    let (dev, peer) = XDP_FLOOR_VETH;
    ip(&["link", "add", dev, "type", "veth", "peer", "name", peer])?;
    ip(&["link", "set", dev, "up"])?;
    ip(&["link", "set", peer, "up"])?;
    let name = std::ffi::CString::new(peer).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(format!("{peer}: {}", std::io::Error::last_os_error()));
    }
    let mut attr = Attr::new();
    attr.u32(0, u32::try_from(prog.as_raw_fd()).unwrap_or(u32::MAX))
        .u32(4, ifindex)
        .u32(8, BPF_XDP)
        .u32(12, XDP_FLAGS_DRV_MODE);
    match sys_bpf(BPF_LINK_CREATE, &mut attr) {
        // SAFETY: the kernel just returned this fd to us, owned by no one else.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => Err(format!("attaching the XDP floor to {peer}: {e}")),
    }
}

/// Runs `ip` with `args`; a failure is the floor's, not the benchmark's.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `BPF_PROG_TEST_RUN`: (return value, ns per repetition).
fn test_run(prog: &OwnedFd, frame: &[u8], repeat: u32) -> Result<(u32, u32), String> {
    let mut out = vec![0u8; frame.len() + 512];
    let mut attr = Attr::new();
    attr.u32(0, u32::try_from(prog.as_raw_fd()).unwrap_or(u32::MAX))
        .u32(8, u32::try_from(frame.len()).unwrap_or(u32::MAX))
        .u32(12, u32::try_from(out.len()).unwrap_or(u32::MAX))
        .u64(16, frame.as_ptr() as u64)
        .u64(24, out.as_mut_ptr() as u64)
        .u32(32, repeat);
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr).map_err(|e| format!("floor test run: {e}"))?;
    Ok((attr.get_u32(4), attr.get_u32(36)))
}
