//! `casemate-vfio-user-blk --socket PATH --image FILE [--format raw|qcow2]
//! [--readonly] [--queues N]`: serve one virtio-blk PCI function over
//! vfio-user to one client (a VMM), then exit when it disconnects.
//!
//! The protocol's server side is the `vfio_user` crate's `Server`; the
//! device is Casemate's own virtio-pci transport and block device.

mod backend;
mod host;
mod irqs;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use casemate_disk::{open_image, Format, OpenOptions};
use vfio_bindings::bindings::vfio::vfio_region_info;
use vfio_user::{IrqInfo, Server, ServerRegion};

const HELP: &str = "usage: casemate-vfio-user-blk --socket PATH --image FILE [--format raw|qcow2] [--readonly] [--queues N]
Serves a virtio-blk PCI function over vfio-user on the UNIX socket PATH
(created; it must not exist) until the client disconnects.
";

struct Args {
    socket: PathBuf,
    image: PathBuf,
    format: Option<Format>,
    read_only: bool,
    queues: u16,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Option<Args>> {
    let (mut socket, mut image, mut format) = (None, None, None);
    let (mut read_only, mut queues) = (false, 1u16);
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--help" | "-h" => return Ok(None),
            "--socket" => socket = Some(PathBuf::from(val()?)),
            "--image" => image = Some(PathBuf::from(val()?)),
            "--format" => {
                let v = val()?;
                format = Some(
                    Format::from_name(&v)
                        .with_context(|| format!("--format {v}: choose raw or qcow2"))?,
                );
            }
            "--readonly" => read_only = true,
            "--queues" => {
                let v = val()?;
                queues = v
                    .parse()
                    .ok()
                    .filter(|q| (1..=16).contains(q))
                    .with_context(|| format!("--queues {v}: 1 to 16"))?;
            }
            other => bail!("unknown argument {other}\n{HELP}"),
        }
    }
    Ok(Some(Args {
        socket: socket.context("--socket is required")?,
        image: image.context("--image is required")?,
        format,
        read_only,
        queues,
    }))
}

fn region(index: u32, size: u64, flags: u32) -> ServerRegion {
    ServerRegion {
        region_info: vfio_region_info {
            argsz: std::mem::size_of::<vfio_region_info>() as u32,
            flags,
            index,
            cap_offset: 0,
            size,
            offset: 0,
        },
        sparse_areas: Vec::new(),
        mmap_fd: None,
    }
}

fn main() -> Result<()> {
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .parse_env("CASEMATE_LOG")
        .format_timestamp(None)
        .init();
    let Some(args) = parse(std::env::args().skip(1))? else {
        print!("{HELP}");
        return Ok(());
    };
    let opts = OpenOptions {
        format: args.format,
        read_only: args.read_only,
        ..Default::default()
    };
    let disk = open_image(&args.image, &opts)
        .with_context(|| format!("opening {}", args.image.display()))?;
    let mut backend = backend::BlkServer::new(Arc::from(disk), args.read_only, args.queues)
        .context("building the virtio-blk function")?;
    let rw = vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_READ
        | vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_WRITE;
    let mut regions: Vec<ServerRegion> = (0..9).map(|i| region(i, 0, 0)).collect();
    regions[backend::BAR0_REGION as usize] = region(
        backend::BAR0_REGION,
        casemate_devices::virtio::pci::VIRTIO_PCI_BAR_SIZE,
        rw,
    );
    regions[backend::CONFIG_REGION as usize] = region(backend::CONFIG_REGION, 4096, rw);
    let irqs = backend
        .irq_counts()
        .iter()
        .enumerate()
        .map(|(i, &count)| IrqInfo {
            index: i as u32,
            flags: 0,
            count,
        })
        .collect();
    let server = Server::new(&args.socket, true, irqs, regions)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("listening on {}", args.socket.display()))?;
    // Tests wait for this line (CASEMATE_LOG=info) instead of polling.
    log::info!("listening on {}", args.socket.display());
    server
        .run(&mut backend)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("serving the client")?;
    Ok(())
}
