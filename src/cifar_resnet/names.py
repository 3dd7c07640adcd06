"""The closed lists of names that params.yaml chooses from, each spelt once.

The params schema (config.py) builds its Literal types from these tuples, and each
registry that acts on a name (model builders, dataset loaders, optimisers, schedules,
CAM methods, border modes) is keyed by exactly one of them: tests/test_name_lists.py holds
the two equal, and params.yaml's comments listing the choices to them.

Plain tuples and no imports: config.py is read by every stage, the download stage
included, which must not depend on (and rerun for) model or training code, nor pay for
importing torch. The order is the one error messages list them in.
"""

DATASETS = ("cifar10", "cifar100", "shapes", "digits", "folder")

# Every network build_model makes: the four-stage ResNets (torchvision's layouts) ...
STAGED_LAYOUT_ARCHS = ("resnet18", "resnet34", "resnet50")
# ... and the networks with one fixed three-stage layout for 32x32 images (models/resnet9.py,
# models/airbench.py): no ImageNet stem, no blocks, no torchvision weights, no layer4.
FIXED_LAYOUT_ARCHS = ("resnet9", "airbench")
ARCHITECTURES = (*STAGED_LAYOUT_ARCHS, *FIXED_LAYOUT_ARCHS)

STEMS = ("cifar", "imagenet")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("onecycle", "linear", "step", "plateau", "cosine", "none")
BORDER_MODES = ("reflect", "constant", "replicate")
CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam")
