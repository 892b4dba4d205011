//! Thumbnails of stored images: made in a few standard sizes (as Synapse makes them, and as the
//! specification allows: a thumbnail at least as large as asked for, where the server has one),
//! with limits on what the decoder may allocate, at most a few at a time, and kept on disk so
//! that each is made once.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use image::imageops::FilterType;
use image::{ImageFormat, ImageReader};

use crate::error::Error;

/// The sizes thumbnails are made in; a request gets the smallest that is at least as large as
/// asked for, or the largest.
const SIZES: [(u32, u32); 5] = [(32, 32), (96, 96), (320, 240), (640, 480), (800, 600)];
/// The largest image decoded to make a thumbnail, in pixels (its header is read first), and
/// the longest side the decoder accepts.
const MAX_SOURCE_PIXELS: u64 = 40_000_000;
const MAX_SOURCE_SIDE: u32 = 100_000;
/// The most memory the decoder may take for one image.
const MAX_DECODER_ALLOCATION: u64 = 256 * 1024 * 1024;
/// How long a request waits for its turn before it is told to come back.
const WAIT_FOR_TURN: Duration = Duration::from_secs(20);

/// How a thumbnail fits the requested size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// The whole image, scaled to fit inside.
    Scale,
    /// The size filled exactly, the image cropped.
    Crop,
}

/// A thumbnail, as stored and served.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

impl Thumbnail {
    fn from_bytes(bytes: Vec<u8>) -> Thumbnail {
        // Thumbnails are PNG or JPEG (JPEG starts FF D8).
        let content_type = if bytes.starts_with(&[0xff, 0xd8]) {
            "image/jpeg"
        } else {
            "image/png"
        };
        Thumbnail {
            bytes,
            content_type,
        }
    }

    pub fn file_name(&self) -> &'static str {
        if self.content_type == "image/jpeg" {
            "thumbnail.jpg"
        } else {
            "thumbnail.png"
        }
    }
}

/// The standard size served for a request.
pub fn standard_size(width: u64, height: u64) -> (u32, u32) {
    SIZES
        .iter()
        .copied()
        .find(|&(w, h)| u64::from(w) >= width && u64::from(h) >= height)
        .unwrap_or(SIZES[SIZES.len() - 1])
}

/// Makes and keeps thumbnails.
pub struct Thumbnailer {
    dir: PathBuf,
    turns: tokio::sync::Semaphore,
}

impl Thumbnailer {
    /// Thumbnails kept under `dir`, made at most `parallel` at a time.
    pub fn new(dir: PathBuf, parallel: usize) -> Thumbnailer {
        Thumbnailer {
            dir,
            turns: tokio::sync::Semaphore::new(parallel.max(1)),
        }
    }

    /// Where the thumbnails of one media item are kept (the id is checked by the caller).
    pub fn dir_of(&self, media_id: &str) -> PathBuf {
        self.dir.join(media_id)
    }

    /// The thumbnail of `media_id` for a request, made from `source` (the stored file) if it was
    /// not made before.
    pub async fn thumbnail(
        &self,
        media_id: &str,
        source: &Path,
        width: u64,
        height: u64,
        fit: Fit,
    ) -> Result<Thumbnail, Error> {
        let (width, height) = standard_size(width, height);
        let fit_name = match fit {
            Fit::Scale => "scale",
            Fit::Crop => "crop",
        };
        let path = self
            .dir_of(media_id)
            .join(format!("{width}x{height}-{fit_name}"));
        if let Ok(bytes) = tokio::fs::read(&path).await {
            return Ok(Thumbnail::from_bytes(bytes));
        }
        let _turn = tokio::time::timeout(WAIT_FOR_TURN, self.turns.acquire())
            .await
            .map_err(|_| Error::LimitExceeded {
                retry_after_ms: 2_000,
            })?
            .map_err(|e| Error::Internal(format!("thumbnail turns: {e}")))?;
        // Made while this request waited for its turn?
        if let Ok(bytes) = tokio::fs::read(&path).await {
            return Ok(Thumbnail::from_bytes(bytes));
        }
        let file = tokio::fs::read(source)
            .await
            .map_err(|e| Error::Internal(format!("reading media {media_id}: {e}")))?;
        let bytes = tokio::task::spawn_blocking(move || make(&file, width, height, fit))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        if let Err(error) = keep(&path, &bytes).await {
            tracing::warn!(%error, media_id, "a thumbnail was made but not kept");
        }
        Ok(Thumbnail::from_bytes(bytes))
    }
}

/// Writes a thumbnail whole or not at all.
async fn keep(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let partial = path.with_extension("partial");
    tokio::fs::write(&partial, bytes).await?;
    tokio::fs::rename(&partial, path).await
}

fn no_thumbnail() -> Error {
    Error::NotFound("no thumbnail for this media".into())
}

fn too_large() -> Error {
    Error::TooLarge("the image is too large to thumbnail".into())
}

/// Scales or crops an image; PNG out, or JPEG for a JPEG.
fn make(file: &[u8], width: u32, height: u32, fit: Fit) -> Result<Vec<u8>, Error> {
    let format = ImageReader::new(Cursor::new(file))
        .with_guessed_format()
        .map_err(|e| Error::Internal(e.to_string()))?
        .format()
        .ok_or_else(no_thumbnail)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SOURCE_SIDE);
    limits.max_image_height = Some(MAX_SOURCE_SIDE);
    limits.max_alloc = Some(MAX_DECODER_ALLOCATION);
    let reader = |file| {
        let mut reader = ImageReader::with_format(Cursor::new(file), format);
        reader.limits(limits.clone());
        reader
    };
    let (source_width, source_height) = reader(file).into_dimensions().map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(),
        _ => no_thumbnail(),
    })?;
    if u64::from(source_width) * u64::from(source_height) > MAX_SOURCE_PIXELS {
        return Err(too_large());
    }
    let image = reader(file).decode().map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(),
        _ => no_thumbnail(),
    })?;
    let scaled = if width >= source_width && height >= source_height {
        image
    } else if fit == Fit::Crop {
        image.resize_to_fill(width, height, FilterType::Triangle)
    } else {
        image.resize(width, height, FilterType::Triangle)
    };
    let output = if format == ImageFormat::Jpeg {
        ImageFormat::Jpeg
    } else {
        ImageFormat::Png
    };
    let mut bytes = Vec::new();
    scaled
        .write_to(&mut Cursor::new(&mut bytes), output)
        .map_err(|e| Error::Internal(format!("encoding a thumbnail: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_get_a_standard_size_at_least_as_large() {
        assert_eq!(standard_size(1, 1), (32, 32));
        assert_eq!(standard_size(32, 32), (32, 32));
        assert_eq!(standard_size(33, 10), (96, 96));
        assert_eq!(standard_size(300, 200), (320, 240));
        assert_eq!(standard_size(321, 10), (640, 480));
        assert_eq!(standard_size(5000, 5000), (800, 600));
        assert_eq!(standard_size(u64::MAX, 0), (800, 600));
    }

    /// With every turn taken, a request waits its time and is then told to come back.
    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_a_turn_then_is_told_to_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let thumbnailer = Thumbnailer::new(dir.path().join("thumbnails"), 1);
        let busy = thumbnailer.turns.acquire().await.unwrap();
        let source = dir.path().join("source");
        let waited = thumbnailer
            .thumbnail("m1", &source, 32, 32, Fit::Scale)
            .await;
        assert!(
            matches!(
                waited,
                Err(Error::LimitExceeded {
                    retry_after_ms: 2_000
                })
            ),
            "{waited:?}"
        );
        // Its turn come, it reads the source (here: missing).
        drop(busy);
        let missing = thumbnailer
            .thumbnail("m1", &source, 32, 32, Fit::Scale)
            .await;
        assert!(matches!(missing, Err(Error::Internal(_))), "{missing:?}");
    }

    #[test]
    fn what_is_no_image_gets_no_thumbnail() {
        assert!(matches!(
            make(b"plain text", 32, 32, Fit::Scale),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            make(b"\x89PNG\r\n\x1a\n", 32, 32, Fit::Scale),
            Err(Error::NotFound(_))
        ));
    }
}
