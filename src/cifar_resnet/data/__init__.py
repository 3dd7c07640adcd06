"""Datasets: CIFAR archives, your own image folders, offline synthetic shapes, sklearn digits; arrays on disk; splits."""

from .arrays import ImageSet, load_classes, load_imageset, save_classes, save_imageset
from .cifar import (
    CIFAR_ARCHIVES,
    ArchiveSpec,
    download,
    load_cifar,
    md5sum,
    read_cifar_folder,
    safe_extract,
    verify_md5,
    write_cifar_archive,
)
from .digits import DIGIT_CLASSES, load_digits32
from .folder import IMAGE_EXTENSIONS, decode_image, load_image_folder, read_image_folder
from .shapes import SHAPE_CLASSES, SHAPES_SPEC, build_shapes_archive, generate_shapes
from .sources import DATASETS, NUM_CLASSES, load_raw_dataset
from .split import prepare_splits, stratified_cap, stratified_split

__all__ = [
    "ArchiveSpec",
    "CIFAR_ARCHIVES",
    "DATASETS",
    "DIGIT_CLASSES",
    "IMAGE_EXTENSIONS",
    "NUM_CLASSES",
    "ImageSet",
    "SHAPES_SPEC",
    "SHAPE_CLASSES",
    "build_shapes_archive",
    "decode_image",
    "download",
    "generate_shapes",
    "load_cifar",
    "load_classes",
    "load_digits32",
    "load_image_folder",
    "load_imageset",
    "load_raw_dataset",
    "md5sum",
    "prepare_splits",
    "read_cifar_folder",
    "read_image_folder",
    "safe_extract",
    "save_classes",
    "save_imageset",
    "stratified_cap",
    "stratified_split",
    "verify_md5",
    "write_cifar_archive",
]
