"""Step 1 of the tutorial: extract, transform, load, with one Parameter.

Reads a station's readings from a small in-file table (no network in the
tutorial, so the "API" is a dict), converts them to Celsius and "loads"
them by returning a summary row.
"""
from prefect import task, Flow, Parameter

RAW_READINGS = {
    "KSEA": [51.8, 53.6, 57.2, 55.4],
    "KPDX": [59.0, 60.8, 62.6, 64.4],
}


@task
def extract(station):
    return RAW_READINGS[station]


@task
def transform(fahrenheit):
    return [round((f - 32) * 5 / 9, 1) for f in fahrenheit]


@task
def load(station, celsius):
    return {
        "station": station,
        "n": len(celsius),
        "min": min(celsius),
        "max": max(celsius),
    }


with Flow("tutorial-etl") as flow:
    station = Parameter("station", default="KSEA")
    readings = extract(station)
    celsius = transform(readings)
    load(station, celsius)


if __name__ == "__main__":
    flow.run(station="KPDX")
