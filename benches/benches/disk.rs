//! Random 4 KiB read and write throughput of qcow2 next to raw, through the
//! `DiskImage` trait, on fully allocated 256 MiB images. The files stay in
//! `$CASEMATE_BENCH_DIR` (default: the temp dir) so `qemu-img bench` can be
//! run on the very same files as the reference.

use std::path::PathBuf;

use casemate_disk::{open_image, qcow2, DiskImage, Format, OpenOptions, RawImage};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SIZE: u64 = 256 << 20;
const BLOCK: usize = 4096;

fn bench_dir() -> PathBuf {
    std::env::var_os("CASEMATE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// Creates and fully writes an image so every cluster is allocated.
fn prepare(fmt: Format) -> Box<dyn DiskImage> {
    let path = bench_dir().join(format!("casemate-bench-disk.{}", fmt.name()));
    match fmt {
        Format::Raw => RawImage::create(&path, SIZE).expect("create raw"),
        Format::Qcow2 => qcow2::create(
            &path,
            &qcow2::CreateOptions {
                size: SIZE,
                ..qcow2::CreateOptions::default()
            },
        )
        .expect("create qcow2"),
    }
    let opts = OpenOptions {
        format: Some(fmt),
        ..OpenOptions::default()
    };
    let img = open_image(&path, &opts).expect("open");
    let chunk = vec![0x5au8; 1 << 20];
    for off in (0..SIZE).step_by(chunk.len()) {
        img.write_at(&chunk, off).expect("fill");
    }
    img.flush().expect("flush");
    img
}

/// A fixed pseudo-random sequence of block-aligned offsets (LCG).
struct Offsets(u64);

impl Offsets {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % (SIZE / BLOCK as u64)) * BLOCK as u64
    }
}

fn random_4k(c: &mut Criterion) {
    let mut g = c.benchmark_group("disk_random_4k");
    g.throughput(Throughput::Bytes(BLOCK as u64));
    g.sample_size(30);
    g.measurement_time(std::time::Duration::from_secs(3));
    for fmt in [Format::Raw, Format::Qcow2] {
        let img = prepare(fmt);
        let mut buf = vec![0u8; BLOCK];
        let mut o = Offsets(1);
        g.bench_function(format!("read/{}", fmt.name()), |b| {
            b.iter(|| img.read_at(&mut buf, o.next()).expect("read"))
        });
        let data = vec![0xa5u8; BLOCK];
        g.bench_function(format!("write/{}", fmt.name()), |b| {
            b.iter(|| img.write_at(&data, o.next()).expect("write"))
        });
        img.flush().expect("flush");
    }
    g.finish();
}

criterion_group!(benches, random_4k);
criterion_main!(benches);
