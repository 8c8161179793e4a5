//! Drive file I/O: io_uring through monoio by default, or a blocking thread pool when the
//! kernel or a container's seccomp profile refuses io_uring. The choice follows the runtime
//! of the calling thread: the binary starts each core on an io_uring runtime, or on the
//! epoll (legacy) one when io_uring is unavailable or refused (and says which in one log
//! line); on the latter, monoio's file operations would block the executor, so disk I/O
//! goes to the blocking pool.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use monoio::buf::{IoBuf, IoBufMut};

use crate::aligned::{io_buf_mut_slice, io_buf_slice, mark_filled};

/// True when this thread's runtime drives io_uring (drive I/O goes through it), false on
/// the epoll runtime (drive I/O goes to the blocking pool). Only called from inside a
/// runtime: every drive operation is async.
pub fn uring_enabled() -> bool {
    !monoio::utils::is_legacy()
}

/// An open file on a drive.
pub struct DriveFile {
    inner: Inner,
    /// Only the fault layer needs to know which file an operation is on.
    #[cfg(feature = "fault-injection")]
    path: PathBuf,
}

enum Inner {
    Uring(monoio::fs::File),
    Blocking(Arc<std::fs::File>),
}

/// Asks the test-only fault layer (see fault.rs) whether an operation on `path` fails, waits,
/// or crashes the process; `Ok(Some(n))`: write only n bytes, then crash. Without the
/// `fault-injection` feature this is nothing.
#[cfg(feature = "fault-injection")]
async fn fault_gate(path: &Path, kind: crate::fault::IoKind, len: usize) -> io::Result<Option<usize>> {
    use crate::fault::Verdict;
    match crate::fault::check(path, kind, len) {
        Verdict::Go => Ok(None),
        Verdict::Fail(err) => Err(err),
        Verdict::Delay(delay) => {
            // Sleep in steps, so a drive whose delay rule is lifted recovers at once.
            let until = std::time::Instant::now() + delay;
            while std::time::Instant::now() < until && crate::fault::delayed(path, kind) {
                monoio::time::sleep((until - std::time::Instant::now()).min(std::time::Duration::from_millis(20)))
                    .await;
            }
            Ok(None)
        }
        Verdict::TearAndCrash(n) => Ok(Some(n)),
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
async fn fault_gate(_path: &Path, _kind: IoKind, _len: usize) -> io::Result<Option<usize>> {
    Ok(None)
}

#[cfg(feature = "fault-injection")]
use crate::fault::IoKind;

/// The kinds of drive operation the fault layer tells apart.
#[cfg(not(feature = "fault-injection"))]
#[derive(Clone, Copy)]
enum IoKind {
    Open,
    Read,
    Write,
    Sync,
    Remove,
}

pub enum OpenMode {
    /// Create a new file (fails if it exists), write only, O_DIRECT when the filesystem allows.
    CreateDirect,
    /// Read an existing file, O_DIRECT when the filesystem allows.
    ReadDirect,
    /// Read/write/append-style buffered access, creating it if missing (the metadata log).
    ReadWriteBuffered,
    /// Read-only, buffered.
    ReadBuffered,
    /// Write into an existing file or create it, O_DIRECT when allowed (repairs).
    WriteDirect,
}

fn std_open(path: &Path, mode: &OpenMode) -> io::Result<std::fs::File> {
    let mut opts = OpenOptions::new();
    match mode {
        OpenMode::CreateDirect => opts.write(true).create_new(true),
        OpenMode::ReadDirect | OpenMode::ReadBuffered => opts.read(true),
        OpenMode::ReadWriteBuffered => opts.read(true).write(true).create(true),
        OpenMode::WriteDirect => opts.write(true).create(true),
    };
    let direct = matches!(mode, OpenMode::CreateDirect | OpenMode::ReadDirect | OpenMode::WriteDirect);
    if direct {
        let mut direct_opts = opts.clone();
        direct_opts.custom_flags(libc::O_DIRECT);
        match direct_opts.open(path) {
            Ok(file) => return Ok(file),
            // tmpfs and some overlay filesystems refuse O_DIRECT: fall back to buffered I/O.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {}
            Err(err) => return Err(err),
        }
    }
    opts.open(path)
}

async fn blocking<T: Send + 'static>(job: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    match monoio::spawn_blocking(job).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::other("blocking I/O task was cancelled")),
    }
}

impl DriveFile {
    pub async fn open(path: PathBuf, mode: OpenMode) -> io::Result<DriveFile> {
        fault_gate(&path, IoKind::Open, 0).await?;
        #[cfg(feature = "fault-injection")]
        let kept = path.clone();
        // Opening is a metadata operation; doing it synchronously keeps the file's flags
        // (O_DIRECT with an EINVAL fallback) in one place for both modes.
        let inner = if uring_enabled() {
            let file = std_open(&path, &mode)?;
            Inner::Uring(monoio::fs::File::from_std(file)?)
        } else {
            let file = blocking(move || std_open(&path, &mode)).await?;
            Inner::Blocking(Arc::new(file))
        };
        Ok(DriveFile {
            inner,
            #[cfg(feature = "fault-injection")]
            path: kept,
        })
    }

    fn path(&self) -> &Path {
        #[cfg(feature = "fault-injection")]
        return &self.path;
        #[cfg(not(feature = "fault-injection"))]
        Path::new("")
    }

    /// Writes all of `buf` at `pos` and gives the buffer back for reuse.
    pub async fn write_all_at<B: IoBuf + Send + 'static>(&self, buf: B, pos: u64) -> io::Result<B> {
        if let Some(torn) = fault_gate(self.path(), IoKind::Write, buf.bytes_init()).await? {
            self.write_prefix_then_crash(buf, pos, torn).await;
        }
        match &self.inner {
            Inner::Uring(file) => {
                let (res, buf) = file.write_all_at(buf, pos).await;
                res.map(|()| buf)
            }
            Inner::Blocking(file) => {
                let file = file.clone();
                blocking(move || file.write_all_at(io_buf_slice(&buf), pos).map(|()| buf)).await
            }
        }
    }

    /// A torn write for the fault layer: the first `len` bytes reach the file, then the
    /// process ends.
    #[cfg(feature = "fault-injection")]
    async fn write_prefix_then_crash<B: IoBuf + Send + 'static>(&self, buf: B, pos: u64, len: usize) -> ! {
        let prefix = io_buf_slice(&buf)[..len].to_vec();
        let _ = match &self.inner {
            Inner::Uring(file) => file.write_all_at(prefix, pos).await.0,
            Inner::Blocking(file) => file.write_all_at(&prefix, pos),
        };
        crate::fault::crash()
    }

    #[cfg(not(feature = "fault-injection"))]
    async fn write_prefix_then_crash<B: IoBuf>(&self, _buf: B, _pos: u64, _len: usize) -> ! {
        unreachable!("torn writes exist only with the fault layer")
    }

    /// Reads exactly buf's capacity (bytes_total) at `pos`, or fails with UnexpectedEof.
    pub async fn read_exact_at<B: IoBufMut + Send + 'static>(&self, buf: B, pos: u64) -> io::Result<B> {
        fault_gate(self.path(), IoKind::Read, 0).await?;
        match &self.inner {
            Inner::Uring(file) => {
                let (res, buf) = file.read_exact_at(buf, pos).await;
                res.map(|()| buf)
            }
            Inner::Blocking(file) => {
                let file = file.clone();
                blocking(move || {
                    let mut buf = buf;
                    file.read_exact_at(io_buf_mut_slice(&mut buf), pos)?;
                    mark_filled(&mut buf);
                    Ok(buf)
                })
                .await
            }
        }
    }

    pub async fn sync_data(&self) -> io::Result<()> {
        fault_gate(self.path(), IoKind::Sync, 0).await?;
        match &self.inner {
            Inner::Uring(file) => file.sync_data().await,
            Inner::Blocking(file) => {
                let file = file.clone();
                blocking(move || file.sync_data()).await
            }
        }
    }
}

/// fsync a directory so that entries created in it (new data files) survive power loss.
pub async fn sync_dir(path: PathBuf) -> io::Result<()> {
    fault_gate(&path, IoKind::Sync, 0).await?;
    if uring_enabled() {
        let dir = std::fs::File::open(&path)?;
        monoio::fs::File::from_std(dir)?.sync_all().await
    } else {
        blocking(move || std::fs::File::open(&path)?.sync_all()).await
    }
}

/// Removes a file; a file that is already gone is not an error.
pub async fn remove_file(path: PathBuf) -> io::Result<()> {
    fault_gate(&path, IoKind::Remove, 0).await?;
    let job = move || match std::fs::remove_file(&path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    };
    if uring_enabled() {
        job()
    } else {
        blocking(job).await
    }
}
