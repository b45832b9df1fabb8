//! In-memory labelled image sets stored as raw `u8` pixels.

/// A set of images of one size, stored contiguously as `u8` in HWC order (image after image),
/// with one class label per image and the class names (label `k` is `class_names[k]`).
///
/// Channels are 3 (RGB) or 1 (grayscale, e.g. MNIST). Invariant:
/// `pixels.len() == labels.len() * height * width * channels`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub class_names: Vec<String>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one image (`height * width * channels`).
    pub fn image_bytes(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// The raw HWC pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let b = self.image_bytes();
        &self.pixels[i * b..(i + 1) * b]
    }

    /// Number of classes (length of `class_names`).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// A new set holding the images at `indices`, in that order (class names kept).
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let b = self.image_bytes();
        let mut pixels = Vec::with_capacity(indices.len() * b);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        ImageSet {
            pixels,
            labels,
            height: self.height,
            width: self.width,
            channels: self.channels,
            class_names: self.class_names.clone(),
        }
    }
}
