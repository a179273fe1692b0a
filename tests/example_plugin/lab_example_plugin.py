"""A third-party plugin: registers a dataset and observes runs, through the public hooks only."""

from lab.api import ImageDataset, hookimpl


def constant_dataset(data_dir, arg, **options):
    import torch

    images = torch.full((8, 1, 2, 2), 7, dtype=torch.uint8)
    labels = torch.zeros(8, dtype=torch.long)
    return ImageDataset("constant", images, labels, images, labels, ["zero"])


@hookimpl
def register_datasets(register):
    register("constant", constant_dataset, description="eight grey 2x2 images")


@hookimpl
def on_run_start(run):
    (run.run_dir / "example_plugin_saw_start").write_text(run.name)
