"""Dense transfer: fine-tuning an encoder for semantic segmentation and object detection, on the trainable
backbone both share."""
