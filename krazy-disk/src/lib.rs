//! Partition layouts and partition tables for krazy images.
