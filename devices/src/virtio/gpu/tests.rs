//! virtio-gpu without KVM: the command handlers against anonymous guest
//! memory, and the worker over a mock split queue.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::protocol::*;
use super::state::GpuState;
use super::*;
use crate::display::Surface;
use crate::virtio::ReadyQueue;

const MEM: u64 = 16 << 20;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap()
}

fn state(max_hostmem: u64) -> (GpuState, Arc<Surface>) {
    let s = Arc::new(Surface::new().unwrap());
    (
        GpuState::new("gpu-test".into(), (1280, 800), max_hostmem, true, s.clone()),
        s,
    )
}

fn cmd(kind: u32, args: &[u32]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [kind, 0, 0, 0, 0, 0] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    for a in args {
        v.extend_from_slice(&a.to_le_bytes());
    }
    v
}

fn resp(r: &[u8]) -> u32 {
    u32::from_le_bytes([r[0], r[1], r[2], r[3]])
}

fn run(s: &mut GpuState, m: &GuestMemoryMmap, kind: u32, args: &[u32]) -> u32 {
    resp(&s.control(m, &cmd(kind, args)))
}

fn attach(s: &mut GpuState, m: &GuestMemoryMmap, id: u32, entries: &[(u64, u32)]) -> u32 {
    let mut v = cmd(CMD_RESOURCE_ATTACH_BACKING, &[id, entries.len() as u32]);
    for &(a, l) in entries {
        v.extend_from_slice(&a.to_le_bytes());
        v.extend_from_slice(&l.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
    }
    resp(&s.control(m, &v))
}

/// Pattern pixel (B8G8R8X8 bytes in memory).
fn pattern(x: u32, y: u32) -> u32 {
    ((x * 7) & 0xff) << 16 | ((y * 3) & 0xff) << 8 | ((x ^ y) & 0xff)
}

/// A `w` x `h` B8G8R8X8 resource 1 with its backing in two pieces at
/// 1 MiB and 4 MiB holding `pattern`, on the scanout, flushed.
fn draw(s: &mut GpuState, m: &GuestMemoryMmap, w: u32, h: u32) {
    assert_eq!(
        run(s, m, CMD_RESOURCE_CREATE_2D, &[1, 2, w, h]),
        RESP_OK_NODATA
    );
    let bytes = w * h * 4;
    let first = (bytes / 2) & !3;
    let mut img = Vec::new();
    for y in 0..h {
        for x in 0..w {
            img.extend_from_slice(&pattern(x, y).to_le_bytes());
        }
    }
    m.write_slice(&img[..first as usize], GuestAddress(1 << 20))
        .unwrap();
    m.write_slice(&img[first as usize..], GuestAddress(4 << 20))
        .unwrap();
    assert_eq!(
        attach(s, m, 1, &[(1 << 20, first), (4 << 20, bytes - first)]),
        RESP_OK_NODATA
    );
    assert_eq!(
        run(s, m, CMD_SET_SCANOUT, &[0, 0, w, h, 0, 1]),
        RESP_OK_NODATA
    );
    assert_eq!(
        run(s, m, CMD_TRANSFER_TO_HOST_2D, &[0, 0, w, h, 0, 0, 1, 0]),
        RESP_OK_NODATA
    );
    assert_eq!(
        run(s, m, CMD_RESOURCE_FLUSH, &[0, 0, w, h, 1, 0]),
        RESP_OK_NODATA
    );
}

#[test]
fn the_drawn_pattern_reaches_the_surface_exactly() {
    let m = mem();
    let (mut s, surf) = state(DEFAULT_MAX_HOSTMEM);
    draw(&mut s, &m, 100, 60);
    let f = surf.lock();
    assert_eq!((f.width(), f.height()), (100, 60));
    for y in 0..60 {
        for x in 0..100 {
            assert_eq!(f.pixels()[(y * 100 + x) as usize], pattern(x, y), "{x},{y}");
        }
    }
}

#[test]
fn partial_transfer_uses_the_offset_as_qemu() {
    let m = mem();
    let (mut s, surf) = state(DEFAULT_MAX_HOSTMEM);
    draw(&mut s, &m, 16, 16);
    // New content at row 5 col 4 only: offset = 5 * stride + 4 * 4.
    let off = 5 * 64 + 16;
    m.write_slice(&0x00ab_cdefu32.to_le_bytes(), GuestAddress((1 << 20) + off))
        .unwrap();
    let r = run(
        &mut s,
        &m,
        CMD_TRANSFER_TO_HOST_2D,
        &[4, 5, 1, 1, off as u32, 0, 1, 0],
    );
    assert_eq!(r, RESP_OK_NODATA);
    run(&mut s, &m, CMD_RESOURCE_FLUSH, &[4, 5, 1, 1, 1, 0]);
    assert_eq!(surf.lock().pixels()[5 * 16 + 4], 0x00ab_cdef);
    assert_eq!(surf.lock().pixels()[5 * 16 + 5], pattern(5, 5));
}

#[test]
fn display_info_and_edid() {
    let m = mem();
    let (mut s, _) = state(DEFAULT_MAX_HOSTMEM);
    let r = s.control(&m, &cmd(CMD_GET_DISPLAY_INFO, &[]));
    assert_eq!(resp(&r), RESP_OK_DISPLAY_INFO);
    assert_eq!(r.len(), HDR_LEN + 16 * 24);
    assert_eq!(
        &r[HDR_LEN + 8..HDR_LEN + 20],
        &[0, 5, 0, 0, 32, 3, 0, 0, 1, 0, 0, 0]
    );
    let r = s.control(&m, &cmd(CMD_GET_EDID, &[0, 0]));
    assert_eq!(resp(&r), RESP_OK_EDID);
    assert_eq!(&r[HDR_LEN..HDR_LEN + 4], &128u32.to_le_bytes());
    assert_eq!(&r[HDR_LEN + 9..HDR_LEN + 15], &[0xff; 6]);
    assert_eq!(
        run(&mut s, &m, CMD_GET_EDID, &[1, 0]),
        RESP_ERR_INVALID_SCANOUT_ID
    );
}

#[test]
fn fenced_requests_get_their_fence_back() {
    let m = mem();
    let (mut s, _) = state(DEFAULT_MAX_HOSTMEM);
    let mut c = cmd(CMD_RESOURCE_CREATE_2D, &[1, 2, 4, 4]);
    c[4] = FLAG_FENCE as u8;
    c[8..16].copy_from_slice(&77u64.to_le_bytes());
    let r = s.control(&m, &c);
    assert_eq!(resp(&r), RESP_OK_NODATA);
    assert_eq!(r[4], 1);
    assert_eq!(&r[8..16], &77u64.to_le_bytes());
}

#[test]
fn hostile_commands_get_errors_and_memory_stays_capped() {
    let m = mem();
    let cap = 8 << 20;
    let (mut s, surf) = state(cap);
    use CMD_RESOURCE_CREATE_2D as CREATE;
    // Resource ids, formats and sizes.
    assert_eq!(
        run(&mut s, &m, CREATE, &[0, 2, 4, 4]),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        run(&mut s, &m, CREATE, &[1, 999, 4, 4]),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        run(&mut s, &m, CREATE, &[1, 2, 0, 4]),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        run(&mut s, &m, CREATE, &[1, 2, u32::MAX, u32::MAX]),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        run(&mut s, &m, CREATE, &[1, 2, 4096, 4096]),
        RESP_ERR_OUT_OF_MEMORY
    );
    assert_eq!(run(&mut s, &m, CREATE, &[1, 2, 1024, 1024]), RESP_OK_NODATA);
    assert_eq!(
        run(&mut s, &m, CREATE, &[1, 2, 4, 4]),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        run(&mut s, &m, CREATE, &[2, 2, 1024, 1024]),
        RESP_ERR_OUT_OF_MEMORY
    );
    // Many small resources stop at the cap too.
    let mut id = 10;
    while run(&mut s, &m, CREATE, &[id, 2, 64, 64]) == RESP_OK_NODATA {
        id += 1;
    }
    assert!(s.hostmem() <= cap, "{} > {cap}", s.hostmem());
    for i in 10..id {
        assert_eq!(run(&mut s, &m, CMD_RESOURCE_UNREF, &[i]), RESP_OK_NODATA);
    }
    // Unknown ids everywhere.
    assert_eq!(
        run(&mut s, &m, CMD_RESOURCE_UNREF, &[99]),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        run(&mut s, &m, CMD_RESOURCE_DETACH_BACKING, &[99]),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        run(&mut s, &m, CMD_RESOURCE_FLUSH, &[0, 0, 1, 1, 99, 0]),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        run(
            &mut s,
            &m,
            CMD_TRANSFER_TO_HOST_2D,
            &[0, 0, 1, 1, 0, 0, 99, 0]
        ),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        run(&mut s, &m, CMD_SET_SCANOUT, &[0, 0, 1, 1, 0, 99]),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    // Backing outside guest RAM, wrapping, empty, too many entries, short.
    assert_eq!(
        attach(&mut s, &m, 1, &[(MEM - 4096, 8192)]),
        RESP_ERR_UNSPEC
    );
    assert_eq!(
        attach(&mut s, &m, 1, &[(u64::MAX - 10, 4096)]),
        RESP_ERR_UNSPEC
    );
    assert_eq!(attach(&mut s, &m, 1, &[(0, 0)]), RESP_ERR_UNSPEC);
    assert_eq!(
        run(&mut s, &m, CMD_RESOURCE_ATTACH_BACKING, &[1, 0]),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        run(&mut s, &m, CMD_RESOURCE_ATTACH_BACKING, &[1, 100_000]),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        run(&mut s, &m, CMD_RESOURCE_ATTACH_BACKING, &[1, 3]),
        RESP_ERR_UNSPEC
    );
    // Transfer without backing, then past a too-small backing.
    assert_eq!(
        run(
            &mut s,
            &m,
            CMD_TRANSFER_TO_HOST_2D,
            &[0, 0, 1, 1, 0, 0, 1, 0]
        ),
        RESP_ERR_UNSPEC
    );
    assert_eq!(attach(&mut s, &m, 1, &[(0, 4096)]), RESP_OK_NODATA);
    assert_eq!(
        attach(&mut s, &m, 1, &[(0, 4096)]),
        RESP_ERR_UNSPEC,
        "twice"
    );
    assert_eq!(
        run(
            &mut s,
            &m,
            CMD_TRANSFER_TO_HOST_2D,
            &[0, 0, 1024, 2, 0, 0, 1, 0]
        ),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        run(
            &mut s,
            &m,
            CMD_TRANSFER_TO_HOST_2D,
            &[0, 0, 1, 1, u32::MAX, u32::MAX, 1, 0]
        ),
        RESP_ERR_INVALID_PARAMETER
    );
    // Rectangles outside the resource, including overflowing ones.
    for r in [
        [1020, 0, 8, 1],
        [0, 0, 1025, 1],
        [u32::MAX, 0, 2, 1],
        [0, u32::MAX, 1, 2],
    ] {
        let t = [r[0], r[1], r[2], r[3], 0, 0, 1, 0];
        assert_eq!(
            run(&mut s, &m, CMD_TRANSFER_TO_HOST_2D, &t),
            RESP_ERR_INVALID_PARAMETER
        );
        let f = [r[0], r[1], r[2], r[3], 1, 0];
        assert_eq!(
            run(&mut s, &m, CMD_RESOURCE_FLUSH, &f),
            RESP_ERR_INVALID_PARAMETER
        );
        let so = [r[0], r[1], r[2], r[3], 0, 1];
        assert_eq!(
            run(&mut s, &m, CMD_SET_SCANOUT, &so),
            RESP_ERR_INVALID_PARAMETER
        );
    }
    assert_eq!(
        run(&mut s, &m, CMD_SET_SCANOUT, &[0, 0, 1, 1, 5, 1]),
        RESP_ERR_INVALID_SCANOUT_ID
    );
    // Short and unknown requests.
    assert_eq!(resp(&s.control(&m, &[1, 2, 3])), RESP_ERR_UNSPEC);
    assert_eq!(resp(&s.control(&m, &cmd(CREATE, &[5, 2]))), RESP_ERR_UNSPEC);
    assert_eq!(run(&mut s, &m, 0x7777, &[]), RESP_ERR_UNSPEC);
    assert_eq!(
        run(&mut s, &m, CMD_GET_CAPSET_INFO, &[0, 0]),
        RESP_ERR_UNSPEC
    );
    // Cursor requests with bad values change nothing.
    s.cursor_cmd(&cmd(CMD_UPDATE_CURSOR, &[0, 1, 1, 0, 4242, 0, 0, 0]));
    s.cursor_cmd(&cmd(CMD_UPDATE_CURSOR, &[3, 1, 1, 0, 1, 0, 0, 0]));
    s.cursor_cmd(&[9]);
    assert_eq!(s.cursor.resource, 0);
    // And the device still draws.
    assert_eq!(run(&mut s, &m, CMD_RESOURCE_UNREF, &[1]), RESP_OK_NODATA);
    assert_eq!(s.hostmem(), 0);
    draw(&mut s, &m, 8, 8);
    assert_eq!(surf.lock().pixels()[9], pattern(1, 1));
}

#[test]
fn unref_of_the_scanout_resource_stops_updates() {
    let m = mem();
    let (mut s, surf) = state(DEFAULT_MAX_HOSTMEM);
    draw(&mut s, &m, 4, 4);
    assert_eq!(run(&mut s, &m, CMD_RESOURCE_UNREF, &[1]), RESP_OK_NODATA);
    assert_eq!(s.resource_count(), 0);
    assert_eq!(
        run(&mut s, &m, CMD_RESOURCE_FLUSH, &[0, 0, 4, 4, 1, 0]),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(surf.lock().pixels()[5], pattern(1, 1));
}

#[test]
fn worker_answers_over_the_queue() {
    let m = mem();
    let vq = MockSplitQueue::new(&m, 16);
    let cq = MockSplitQueue::create(&m, GuestAddress(0x80000), 16);
    let req = cmd(CMD_GET_DISPLAY_INFO, &[]);
    m.write_slice(&req, GuestAddress(0x10000)).unwrap();
    let raw = crate::virtio::testing::chain_descriptors(&[vec![
        (0x10000, req.len() as u32, false),
        (0x20000, 4096, true),
    ]]);
    vq.add_desc_chains(&raw, 0).unwrap();
    let surf = Arc::new(Surface::new().unwrap());
    let mut dev = GpuDevice::new(GpuConfig {
        name: "gpu0".into(),
        xres: 1280,
        yres: 800,
        max_hostmem: DEFAULT_MAX_HOSTMEM,
        surface: surf,
    });
    dev.ack_features(dev.features());
    let irqs = Arc::new(crate::virtio::testing::CountingVirtioIrq::default());
    let q = |index, queue| ReadyQueue {
        index,
        queue,
        notify: EventFd::new(EFD_NONBLOCK).unwrap(),
    };
    let ctx = StartContext {
        mem: m.clone(),
        queues: vec![
            q(0, vq.create_queue().unwrap()),
            q(1, cq.create_queue().unwrap()),
        ],
        irq: irqs.clone(),
        needs_reset: Arc::new(AtomicBool::new(false)),
    };
    let mut w = dev.activate(ctx).unwrap();
    w.on_event(0).unwrap();
    let mut hdr = [0u8; 4];
    m.read_slice(&mut hdr, GuestAddress(0x20000)).unwrap();
    assert_eq!(u32::from_le_bytes(hdr), RESP_OK_DISPLAY_INFO);
    let used_len: u32 = m.read_obj(GuestAddress(vq.used_addr().0 + 8)).unwrap();
    assert_eq!(used_len as usize, HDR_LEN + 16 * 24);
}
