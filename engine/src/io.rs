//! Drive file I/O: io_uring through monoio by default, or a blocking thread pool when the
//! kernel or a container's seccomp profile refuses io_uring. The choice is made once at
//! start-up (`set_io_mode`) and announced by the binary in one log line.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use monoio::buf::{IoBuf, IoBufMut};

use crate::aligned::{io_buf_mut_slice, io_buf_slice, mark_filled};

static USE_URING: AtomicBool = AtomicBool::new(true);

/// Chooses io_uring (true) or the blocking fallback (false) for all drive I/O.
pub fn set_io_mode(uring: bool) {
    USE_URING.store(uring, Ordering::Relaxed);
}

pub fn uring_enabled() -> bool {
    USE_URING.load(Ordering::Relaxed)
}

/// An open file on a drive.
pub enum DriveFile {
    Uring(monoio::fs::File),
    Blocking(Arc<std::fs::File>),
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
        // Opening is a metadata operation; doing it synchronously keeps the file's flags
        // (O_DIRECT with an EINVAL fallback) in one place for both modes.
        if uring_enabled() {
            let file = std_open(&path, &mode)?;
            Ok(DriveFile::Uring(monoio::fs::File::from_std(file)?))
        } else {
            let file = blocking(move || std_open(&path, &mode)).await?;
            Ok(DriveFile::Blocking(Arc::new(file)))
        }
    }

    /// Writes all of `buf` at `pos` and gives the buffer back for reuse.
    pub async fn write_all_at<B: IoBuf + Send + 'static>(&self, buf: B, pos: u64) -> io::Result<B> {
        match self {
            DriveFile::Uring(file) => {
                let (res, buf) = file.write_all_at(buf, pos).await;
                res.map(|()| buf)
            }
            DriveFile::Blocking(file) => {
                let file = file.clone();
                blocking(move || file.write_all_at(io_buf_slice(&buf), pos).map(|()| buf)).await
            }
        }
    }

    /// Reads exactly buf's capacity (bytes_total) at `pos`, or fails with UnexpectedEof.
    pub async fn read_exact_at<B: IoBufMut + Send + 'static>(&self, buf: B, pos: u64) -> io::Result<B> {
        match self {
            DriveFile::Uring(file) => {
                let (res, buf) = file.read_exact_at(buf, pos).await;
                res.map(|()| buf)
            }
            DriveFile::Blocking(file) => {
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
        match self {
            DriveFile::Uring(file) => file.sync_data().await,
            DriveFile::Blocking(file) => {
                let file = file.clone();
                blocking(move || file.sync_data()).await
            }
        }
    }
}

/// fsync a directory so that entries created in it (new data files) survive power loss.
pub async fn sync_dir(path: PathBuf) -> io::Result<()> {
    if uring_enabled() {
        let dir = std::fs::File::open(&path)?;
        monoio::fs::File::from_std(dir)?.sync_all().await
    } else {
        blocking(move || std::fs::File::open(&path)?.sync_all()).await
    }
}

/// Removes a file; a file that is already gone is not an error.
pub async fn remove_file(path: PathBuf) -> io::Result<()> {
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
