//! Page-aligned buffers for O_DIRECT I/O. This is the engine's only `unsafe` module.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// O_DIRECT requires buffer address, file offset and length aligned to the logical block size;
/// 4 KiB covers every NVMe and virtio disk we target.
pub const IO_ALIGN_BYTES: usize = 4096;

/// A zero-initialised, 4 KiB-aligned, fixed-capacity byte buffer with a length.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    capacity: usize,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like Vec<u8>), so moving it to another
// thread is sound.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of `capacity` bytes (rounded up to the alignment), all zero, with len = capacity.
    pub fn zeroed(capacity: usize) -> Self {
        let capacity = round_up(capacity.max(1), IO_ALIGN_BYTES);
        let layout = Self::layout(capacity);
        // SAFETY: layout has non-zero size (capacity >= IO_ALIGN_BYTES).
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else { std::alloc::handle_alloc_error(layout) };
        Self { ptr, capacity, len: capacity }
    }

    fn layout(capacity: usize) -> Layout {
        match Layout::from_size_align(capacity, IO_ALIGN_BYTES) {
            Ok(layout) => layout,
            Err(_) => panic!("aligned buffer of {capacity} bytes exceeds the address space"),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the length; it must stay within capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity, "aligned buffer length {len} > capacity {}", self.capacity);
        self.len = len;
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for `capacity` initialised (zeroed at allocation) bytes and
        // len <= capacity.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated in `zeroed` with exactly this layout.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) }
    }
}

// SAFETY: the pointer stays valid and unmoved while the buffer is owned by an in-flight I/O
// (the buffer is moved into the operation and the heap allocation never moves); bytes_init
// is `len`, which is always initialised.
unsafe impl monoio::buf::IoBuf for AlignedBuf {
    fn read_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
}

// SAFETY: as above; the whole capacity is initialised (zeroed), so set_init may move len
// anywhere within capacity.
unsafe impl monoio::buf::IoBufMut for AlignedBuf {
    fn write_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn bytes_total(&mut self) -> usize {
        self.capacity
    }
    unsafe fn set_init(&mut self, pos: usize) {
        self.len = pos.min(self.capacity);
    }
}

/// The initialised bytes of an I/O buffer, for the blocking fallback path.
pub(crate) fn io_buf_slice<B: monoio::buf::IoBuf>(buf: &B) -> &[u8] {
    // SAFETY: IoBuf guarantees read_ptr is valid for bytes_init initialised bytes while the
    // buffer is borrowed.
    unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) }
}

/// The whole writable capacity of an I/O buffer, for the blocking fallback path.
pub(crate) fn io_buf_mut_slice<B: monoio::buf::IoBufMut>(buf: &mut B) -> &mut [u8] {
    let total = buf.bytes_total();
    // SAFETY: IoBufMut guarantees write_ptr is valid for bytes_total bytes while borrowed
    // mutably. Callers only write through the slice (a read fills it) before reading it,
    // and every buffer type we pass (AlignedBuf, Vec with zeroed len) is fully initialised.
    unsafe { std::slice::from_raw_parts_mut(buf.write_ptr(), total) }
}

/// Records that a read filled the whole capacity of `buf`.
pub(crate) fn mark_filled<B: monoio::buf::IoBufMut>(buf: &mut B) {
    let total = buf.bytes_total();
    // SAFETY: called only after read_exact_at filled all `total` bytes.
    unsafe { buf.set_init(total) };
}

/// Each core keeps at most this many idle buffers (about 33 MiB of 516 KiB frames).
const POOL_BUFFERS_MAX: usize = 64;

thread_local! {
    /// This core's idle I/O buffers. Only its own tasks touch it: no locks.
    static POOL: std::cell::RefCell<Vec<AlignedBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of at least `len` bytes (len set to `len` rounded up to the alignment), from this
/// core's pool when one of that size is idle. Its bytes are initialised but stale: callers
/// overwrite every byte they use.
pub fn take(len: usize) -> AlignedBuf {
    let capacity = round_up(len.max(1), IO_ALIGN_BYTES);
    let pooled = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let at = pool.iter().position(|b| b.capacity == capacity)?;
        Some(pool.swap_remove(at))
    });
    let mut buf = pooled.unwrap_or_else(|| AlignedBuf::zeroed(capacity));
    buf.set_len(capacity);
    buf
}

/// Returns a buffer to this core's pool (dropped when the pool is full).
pub fn give(buf: AlignedBuf) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_BUFFERS_MAX {
            pool.push(buf);
        }
    });
}

pub fn round_up(value: usize, align: usize) -> usize {
    value.div_ceil(align) * align
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_buffers_of_the_same_size() {
        let mut a = take(5000);
        a.as_mut_slice()[0] = 9;
        let ptr = a.as_slice().as_ptr();
        give(a);
        let b = take(8192);
        assert_eq!(b.as_slice().as_ptr(), ptr, "same-size buffer comes back");
        assert_eq!(b.len(), 8192);
        let c = take(4096);
        assert_ne!(c.as_slice().as_ptr(), ptr);
        assert_eq!(c.as_slice().as_ptr() as usize % IO_ALIGN_BYTES, 0);
    }

    #[test]
    fn aligned_and_zeroed() {
        let mut buf = AlignedBuf::zeroed(5000);
        assert_eq!(buf.capacity(), 8192);
        assert_eq!(buf.as_slice().as_ptr() as usize % IO_ALIGN_BYTES, 0);
        assert!(buf.as_slice().iter().all(|b| *b == 0));
        buf.as_mut_slice()[8191] = 7;
        buf.set_len(10);
        assert_eq!(buf.as_slice().len(), 10);
    }
}
