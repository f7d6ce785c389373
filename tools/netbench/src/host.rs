//! The host side of the benchmark, run inside the benchmark's namespace
//! (`ip netns exec`): a blaster that floods the tap with frames through an
//! AF_PACKET socket (what the guest receives in the `rx` rows), and the
//! ceiling: the same single-threaded loop a VMM runs on a tap fd (write
//! frames with their vnet header; read what the blaster sends), without a
//! guest. Hand-written on libc: it is a few socket and tun calls.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const HDR: usize = 12;
const ETH_EXP: u16 = 0x88b5;

fn ifreq(name: &str, flags: i32) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    r.ifr_ifru.ifru_flags = flags as libc::c_short;
    r
}

/// A broadcast frame of `size` bytes with the experimental EtherType.
fn frame(size: usize) -> Vec<u8> {
    let mut f = vec![0x5au8; size];
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&ETH_EXP.to_be_bytes());
    f
}

/// An AF_PACKET socket bound to `ifname`, for sending raw frames.
fn packet_socket(ifname: &str) -> Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let c = std::ffi::CString::new(ifname)?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("no interface {ifname}");
    }
    // SAFETY: sockaddr_ll is plain old data.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto;
    sa.sll_ifindex = index as i32;
    // SAFETY: binding our socket to a sockaddr_ll of the right size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r < 0 {
        bail!("binding to {ifname}: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Send `size`-byte frames out of `ifname` (into the tap's reader) for
/// `secs` seconds, as fast as the socket takes them.
pub fn blast(ifname: &str, size: usize, secs: u64) -> Result<()> {
    let fd = packet_socket(ifname)?;
    let f = frame(size);
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        for _ in 0..256 {
            // SAFETY: sending from a live buffer of its length.
            unsafe { libc::send(fd.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
        }
    }
    Ok(())
}

/// The tap `ifname` opened as a VMM opens it (IFF_TAP | IFF_NO_PI |
/// IFF_VNET_HDR, 12-byte header).
fn open_tap(ifname: &str) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun")?;
    let mut req = ifreq(ifname, libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR);
    // SAFETY: TUNSETIFF on a tun fd we own, with an ifreq.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        bail!("attaching {ifname}: {}", std::io::Error::last_os_error());
    }
    let len = HDR as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) } < 0 {
        bail!(
            "vnet header on {ifname}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(file)
}

/// The probe's TSO frame (`probe=net-bench dir=tso`): virtio header
/// (NEEDS_CSUM, GSO TCPV4, MSS 1448) and a TCP/IPv4 frame of `TSO_FRAME`
/// bytes from 10.0.2.15 to 10.0.2.2.
pub const TSO_FRAME: usize = 14 + 65000;

fn tso_frame() -> Vec<u8> {
    let mut b = vec![0x5au8; HDR + TSO_FRAME];
    b[..HDR].copy_from_slice(&[1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0]);
    let f = &mut b[HDR..];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip.fill(0);
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((TSO_FRAME - 14) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 0, 2, 15]);
    ip[16..20].copy_from_slice(&[10, 0, 2, 2]);
    let mut s: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    ip[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    let tcp = &mut f[34..54];
    tcp.fill(0);
    tcp[..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&9u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18;
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let mut s: u32 = 0x0a00 + 0x020f + 0x0a00 + 0x0202 + 6 + (TSO_FRAME - 34) as u32;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    tcp[16..18].copy_from_slice(&(s as u16).to_be_bytes());
    b
}

/// The host's own limit on one tap queue, frames per second: `tx` writes
/// frames (with a zero vnet header) as a VMM sends guest frames, `tso`
/// the probe's 64 KiB GSO frame with its header; `rx` reads what a
/// blaster thread sends in, as a VMM receives them.
pub fn ceiling(ifname: &str, dir: &str, size: usize, ms: u64) -> Result<f64> {
    let mut tap = open_tap(ifname)?;
    let dur = Duration::from_millis(ms);
    if dir == "tso" {
        let flags = (libc::TUN_F_CSUM | libc::TUN_F_TSO4) as libc::c_ulong;
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETOFFLOAD, flags) };
        let buf = tso_frame();
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < dur {
            for _ in 0..16 {
                if tap.write(&buf).is_ok() {
                    n += 1;
                }
            }
        }
        return Ok(n as f64 / t0.elapsed().as_secs_f64());
    }
    let tx = dir == "tx";
    let mut buf = vec![0u8; HDR + size.max(2048)];
    if tx {
        buf[HDR..HDR + size].copy_from_slice(&frame(size));
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < dur {
            for _ in 0..256 {
                if tap.write(&buf[..HDR + size]).is_ok() {
                    n += 1;
                }
            }
        }
        return Ok(n as f64 / t0.elapsed().as_secs_f64());
    }
    let name = ifname.to_string();
    let secs = ms.div_ceil(1000) + 2;
    let blaster = std::thread::spawn(move || blast(&name, size, secs));
    // From the first frame on, as the probe counts.
    tap.read(&mut buf).context("reading the tap")?;
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < dur {
        if tap.read(&mut buf).is_ok() {
            n += 1;
        }
    }
    let fps = n as f64 / t0.elapsed().as_secs_f64();
    drop(tap);
    let _ = blaster.join();
    Ok(fps)
}
