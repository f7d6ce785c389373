//! `probe=gpu [index=N] [hold=MS] [w=W h=H]`: drives virtio-gpu device N
//! (default the first) in 2D: display info, EDID, then a W x H (default
//! 256 x 160, at most 320 x 200) B8G8R8X8 resource backed by the probe's
//! memory, filled with the pattern below, set as the scanout,
//! transferred and flushed. `probe: gpu-drawn` goes out once the flush
//! has completed (the host shows the pattern from then on); with `hold`
//! the probe then stays up for a VNC client to look.
//!
//! The pattern, pixel (x, y) = `0x00RRGGBB` with R = 7x, G = 3y, B = x
//! xor y (each mod 256), is what tests compare the captured screen with.
//!
//! `probe=gpu-evil [hold=MS]`: every out-of-bounds command the device
//! must refuse, each expecting its error response, resources created
//! until the device's memory cap says no, then the normal drawing (resource
//! id 2): the device still works after.

use super::{Ctx, Outcome};
use crate::report::Line;
use crate::tsc;
use crate::virtio::find::{self, bdf_str, VIRTIO_ID_GPU};
use crate::virtio::gpu::*;
use crate::virtio::{Dma, Transport};

const MAX_W: u64 = 320;
const MAX_H: u64 = 200;
/// The image the device copies from.
static FB: Dma<{ (MAX_W * MAX_H * 4) as usize }> = Dma::new();

pub fn pattern(x: u32, y: u32) -> u32 {
    ((x * 7) & 0xff) << 16 | ((y * 3) & 0xff) << 8 | ((x ^ y) & 0xff)
}

fn open(ctx: &Ctx) -> Result<Gpu, &'static str> {
    let which = ctx.args.number("index", 0).map_err(|_| "bad-arg")? as usize;
    let (f, access) = find::pick(ctx.boot, &ctx.args, VIRTIO_ID_GPU, which)?;
    let t = find::transport(ctx.boot, &ctx.args, f, access)?;
    let gpu = Gpu::open(t)?;
    let mut l = Line::topic("gpu");
    l.kv_word("transport", gpu.t.name());
    match &gpu.t {
        Transport::Mmio(m) => l.kv_hex("base", m.base),
        Transport::Pci(p) => l.kv_word("bdf", bdf_str(p.bdf).as_str()),
    };
    l.kv_hex("negotiated", gpu.features).emit();
    Ok(gpu)
}

fn expect(got: u32, want: u32, reason: &'static str) -> Outcome {
    if got == want {
        Ok(())
    } else {
        Line::topic("gpu-unexpected").kv_word("step", reason).kv_hex("resp", got as u64).kv_hex("want", want as u64).emit();
        Err(reason)
    }
}

/// Draw the pattern with resource `id` (create, back, fill, scan out,
/// transfer, flush).
fn draw(gpu: &mut Gpu, id: u32, w: u32, h: u32) -> Outcome {
    expect(gpu.cmd(CMD_RESOURCE_CREATE_2D, &[id, FORMAT_BGRX, w, h])?, RESP_OK_NODATA, "gpu-create")?;
    let bytes = w * h * 4;
    let fb = FB.addr();
    expect(
        gpu.cmd(CMD_RESOURCE_ATTACH_BACKING, &[id, 1, fb as u32, (fb >> 32) as u32, bytes, 0])?,
        RESP_OK_NODATA,
        "gpu-attach",
    )?;
    for y in 0..h {
        for x in 0..w {
            let a = fb + ((y * w + x) * 4) as u64;
            // SAFETY: inside FB (w, h are capped at MAX_W, MAX_H).
            unsafe { core::ptr::write_volatile(a as *mut u32, pattern(x, y)) };
        }
    }
    expect(gpu.cmd(CMD_SET_SCANOUT, &[0, 0, w, h, 0, id])?, RESP_OK_NODATA, "gpu-scanout")?;
    expect(gpu.cmd(CMD_TRANSFER_TO_HOST_2D, &[0, 0, w, h, 0, 0, id, 0])?, RESP_OK_NODATA, "gpu-transfer")?;
    expect(gpu.cmd(CMD_RESOURCE_FLUSH, &[0, 0, w, h, id, 0])?, RESP_OK_NODATA, "gpu-flush")?;
    // Cursor: hide it (resource 0), then move it; no response to wait for
    // beyond the chain's return.
    gpu.cursor_cmd(CMD_UPDATE_CURSOR, &[0, 0, 0, 0, 0, 0, 0, 0])?;
    gpu.cursor_cmd(CMD_MOVE_CURSOR, &[0, 10, 10, 0, 0, 0, 0, 0])?;
    Ok(())
}

fn hold(ctx: &Ctx) -> Outcome {
    let ms = ctx.args.number("hold", 0).map_err(|_| "bad-arg")?;
    tsc::delay_us(ms.saturating_mul(1000));
    Ok(())
}

pub fn run(ctx: &Ctx) -> Outcome {
    let w = ctx.args.number("w", 256).map_err(|_| "bad-arg")?;
    let h = ctx.args.number("h", 160).map_err(|_| "bad-arg")?;
    if w == 0 || h == 0 || w > MAX_W || h > MAX_H {
        return Err("bad-arg");
    }
    let mut gpu = open(ctx)?;
    expect(gpu.cmd(CMD_GET_DISPLAY_INFO, &[])?, RESP_OK_DISPLAY_INFO, "gpu-display-info")?;
    // pmodes[0]: rect x, y, w, h at words 6..10, enabled at word 10.
    let mut l = Line::topic("gpu");
    l.kv_u("xres", gpu.resp_word(8) as u64).kv_u("yres", gpu.resp_word(9) as u64).kv_u("enabled", gpu.resp_word(10) as u64);
    if gpu.features & F_EDID != 0 {
        expect(gpu.cmd(CMD_GET_EDID, &[0, 0])?, RESP_OK_EDID, "gpu-edid")?;
        let header_ok = gpu.resp_byte(32) == 0 && (1..7).all(|i| gpu.resp_byte(32 + i) == 0xff);
        l.kv_u("edid_size", gpu.resp_word(6) as u64).kv_u("edid_header_ok", header_ok as u64);
    }
    l.emit();
    draw(&mut gpu, 1, w as u32, h as u32)?;
    Line::topic("gpu-drawn").kv_u("w", w).kv_u("h", h).kv_u("resource", 1).emit();
    hold(ctx)
}

pub fn run_evil(ctx: &Ctx) -> Outcome {
    let mut gpu = open(ctx)?;
    let fb = FB.addr() as u32;
    let checks: &[(&str, u32, &[u32], u32)] = &[
        ("create-id0", CMD_RESOURCE_CREATE_2D, &[0, FORMAT_BGRX, 4, 4], RESP_ERR_INVALID_RESOURCE_ID),
        ("create-format", CMD_RESOURCE_CREATE_2D, &[1, 999, 4, 4], RESP_ERR_INVALID_PARAMETER),
        ("create-empty", CMD_RESOURCE_CREATE_2D, &[1, FORMAT_BGRX, 0, 4], RESP_ERR_INVALID_PARAMETER),
        ("create-huge", CMD_RESOURCE_CREATE_2D, &[1, FORMAT_BGRX, 0xffff_ffff, 0xffff_ffff], RESP_ERR_INVALID_PARAMETER),
        ("create-over-cap", CMD_RESOURCE_CREATE_2D, &[1, FORMAT_BGRX, 8192, 8192], RESP_ERR_OUT_OF_MEMORY),
        ("create", CMD_RESOURCE_CREATE_2D, &[1, FORMAT_BGRX, 64, 64], RESP_OK_NODATA),
        ("create-again", CMD_RESOURCE_CREATE_2D, &[1, FORMAT_BGRX, 64, 64], RESP_ERR_INVALID_RESOURCE_ID),
        ("unref-unknown", CMD_RESOURCE_UNREF, &[77, 0], RESP_ERR_INVALID_RESOURCE_ID),
        ("attach-unknown", CMD_RESOURCE_ATTACH_BACKING, &[77, 1, fb, 0, 4096, 0], RESP_ERR_INVALID_RESOURCE_ID),
        ("attach-outside-ram", CMD_RESOURCE_ATTACH_BACKING, &[1, 1, 0, 0x100, 16384, 0], RESP_ERR_UNSPEC),
        ("attach-zero-entries", CMD_RESOURCE_ATTACH_BACKING, &[1, 0], RESP_ERR_INVALID_PARAMETER),
        ("transfer-no-backing", CMD_TRANSFER_TO_HOST_2D, &[0, 0, 64, 64, 0, 0, 1, 0], RESP_ERR_UNSPEC),
        ("attach-small", CMD_RESOURCE_ATTACH_BACKING, &[1, 1, fb, 0, 4096, 0], RESP_OK_NODATA),
        ("transfer-past-backing", CMD_TRANSFER_TO_HOST_2D, &[0, 0, 64, 64, 0, 0, 1, 0], RESP_ERR_INVALID_PARAMETER),
        ("transfer-outside", CMD_TRANSFER_TO_HOST_2D, &[60, 0, 8, 1, 0, 0, 1, 0], RESP_ERR_INVALID_PARAMETER),
        ("transfer-wrap", CMD_TRANSFER_TO_HOST_2D, &[0xffff_fff0, 0, 0x20, 1, 0, 0, 1, 0], RESP_ERR_INVALID_PARAMETER),
        ("transfer-unknown", CMD_TRANSFER_TO_HOST_2D, &[0, 0, 1, 1, 0, 0, 77, 0], RESP_ERR_INVALID_RESOURCE_ID),
        ("scanout-id", CMD_SET_SCANOUT, &[0, 0, 64, 64, 5, 1], RESP_ERR_INVALID_SCANOUT_ID),
        ("scanout-outside", CMD_SET_SCANOUT, &[0, 0, 65, 64, 0, 1], RESP_ERR_INVALID_PARAMETER),
        ("scanout-unknown", CMD_SET_SCANOUT, &[0, 0, 1, 1, 0, 77], RESP_ERR_INVALID_RESOURCE_ID),
        ("flush-outside", CMD_RESOURCE_FLUSH, &[0, 60, 64, 8, 1, 0], RESP_ERR_INVALID_PARAMETER),
        ("flush-unknown", CMD_RESOURCE_FLUSH, &[0, 0, 1, 1, 77, 0], RESP_ERR_INVALID_RESOURCE_ID),
        ("edid-scanout", CMD_GET_EDID, &[3, 0], RESP_ERR_INVALID_SCANOUT_ID),
        ("unknown-command", 0x0777, &[], RESP_ERR_UNSPEC),
        ("short-create", CMD_RESOURCE_CREATE_2D, &[9], RESP_ERR_UNSPEC),
        ("detach", CMD_RESOURCE_DETACH_BACKING, &[1, 0], RESP_OK_NODATA),
        ("detach-again", CMD_RESOURCE_DETACH_BACKING, &[1, 0], RESP_ERR_UNSPEC),
        ("unref", CMD_RESOURCE_UNREF, &[1, 0], RESP_OK_NODATA),
    ];
    let mut passed = 0u64;
    for &(name, kind, args, want) in checks {
        let got = gpu.cmd(kind, args)?;
        Line::topic("gpu-evil").kv_word("check", name).kv_hex("resp", got as u64).emit();
        expect(got, want, "gpu-evil-wrong-response")?;
        passed += 1;
    }
    // 1024 x 1024 resources (4 MiB each) until the cap refuses one.
    let mut made = 0u32;
    let last = loop {
        let r = gpu.cmd(CMD_RESOURCE_CREATE_2D, &[100 + made, FORMAT_BGRX, 1024, 1024])?;
        if r != RESP_OK_NODATA || made >= 1024 {
            break r;
        }
        made += 1;
    };
    expect(last, RESP_ERR_OUT_OF_MEMORY, "gpu-evil-no-cap")?;
    for i in 0..made {
        expect(gpu.cmd(CMD_RESOURCE_UNREF, &[100 + i, 0])?, RESP_OK_NODATA, "gpu-evil-unref")?;
    }
    Line::topic("gpu-evil").kv_u("checks", passed).kv_u("capped_after", made as u64).emit();
    draw(&mut gpu, 2, 256, 160)?;
    Line::topic("gpu-drawn").kv_u("w", 256).kv_u("h", 160).kv_u("resource", 2).emit();
    hold(ctx)
}

/// The full-screen image `gpu-bench` flushes.
static SCREEN: Dma<{ 1280 * 800 * 4 }> = Dma::new();

/// `probe=gpu-bench [ms=N]`: a 1280 x 800 resource on the scanout,
/// then for N ms (default 5000) a changed band, a full-screen transfer
/// and a full-screen flush per frame, as fast as the device completes
/// them. `probe: gpu-bench-ready` comes before the loop (a VNC client
/// connects then); `probe: gpu-bench frames=F ms=M` after it.
pub fn run_bench(ctx: &Ctx) -> Outcome {
    let ms = ctx.args.number("ms", 5000).map_err(|_| "bad-arg")?;
    let (w, h) = (1280u32, 800u32);
    let mut gpu = open(ctx)?;
    let fb = SCREEN.addr();
    expect(gpu.cmd(CMD_RESOURCE_CREATE_2D, &[1, FORMAT_BGRX, w, h])?, RESP_OK_NODATA, "gpu-create")?;
    expect(
        gpu.cmd(CMD_RESOURCE_ATTACH_BACKING, &[1, 1, fb as u32, (fb >> 32) as u32, w * h * 4, 0])?,
        RESP_OK_NODATA,
        "gpu-attach",
    )?;
    expect(gpu.cmd(CMD_SET_SCANOUT, &[0, 0, w, h, 0, 1])?, RESP_OK_NODATA, "gpu-scanout")?;
    Line::topic("gpu-bench-ready").kv_u("w", w as u64).kv_u("h", h as u64).emit();
    let start = crate::io::rdtsc();
    let end = start + tsc::us_to_ticks(ms.saturating_mul(1000));
    let mut frames = 0u64;
    while crate::io::rdtsc() < end {
        // A band of 16 rows changes colour every frame.
        let y0 = (frames as u32 * 16) % h;
        for y in y0..(y0 + 16).min(h) {
            for x in 0..w {
                let a = fb + ((y * w + x) * 4) as u64;
                // SAFETY: inside SCREEN (y < h, x < w).
                unsafe { core::ptr::write_volatile(a as *mut u32, (frames as u32).wrapping_mul(0x10203)) };
            }
        }
        expect(gpu.cmd(CMD_TRANSFER_TO_HOST_2D, &[0, 0, w, h, 0, 0, 1, 0])?, RESP_OK_NODATA, "gpu-transfer")?;
        expect(gpu.cmd(CMD_RESOURCE_FLUSH, &[0, 0, w, h, 1, 0])?, RESP_OK_NODATA, "gpu-flush")?;
        frames += 1;
    }
    let took = (crate::io::rdtsc() - start) / tsc::us_to_ticks(1000).max(1);
    Line::topic("gpu-bench").kv_u("frames", frames).kv_u("ms", took).emit();
    Ok(())
}
