"""Resize "images" in parallel on a LocalDaskExecutor (threads).

The images are tuples (name, width, height); the work is arithmetic so the
flow runs anywhere, but the shape is the one our thumbnailer uses.
"""
from prefect import Flow, Parameter, task, unmapped
from prefect.executors import LocalDaskExecutor
from prefect.run_configs import LocalRun
from prefect.storage import Local

IMAGES = [
    ("beach.jpg", 4000, 3000),
    ("team.png", 1200, 800),
    ("logo.svg", 300, 300),
    ("scan.tif", 2480, 3508),
]


@task
def list_images():
    return IMAGES


@task
def thumbnail(image, max_side):
    name, w, h = image
    scale = min(1.0, max_side / max(w, h))
    return {"name": name, "size": [round(w * scale), round(h * scale)]}


@task
def manifest(thumbs):
    return {t["name"]: t["size"] for t in thumbs}


with Flow(
    "thumbnails",
    executor=LocalDaskExecutor(scheduler="threads", num_workers=2),
    run_config=LocalRun(env={"OMP_NUM_THREADS": "1"}, labels=["dev"]),
    storage=Local(add_default_labels=False),
) as flow:
    max_side = Parameter("max_side", default=256)
    thumbs = thumbnail.map(list_images(), unmapped(max_side))
    manifest(thumbs)
