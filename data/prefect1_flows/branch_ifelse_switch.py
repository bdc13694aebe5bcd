from prefect import task, Flow, Parameter
from prefect.tasks.control_flow import ifelse, switch


@task
def is_weekend(day_name):
    return day_name in ("sat", "sun")


@task
def weekend_batch():
    return "small batch"


@task
def weekday_batch():
    return "big batch"


@task
def region_of(country):
    return {"de": "eu", "fr": "eu", "us": "na", "br": "sa"}.get(country, "other")


@task
def eu_pipeline():
    return "eu: gdpr scrub"


@task
def na_pipeline():
    return "na: standard"


@task
def fallback_pipeline():
    return "manual review"


with Flow("batch-router") as flow:
    day = Parameter("day_name", default="sat")
    country = Parameter("country", default="fr")

    ifelse(is_weekend(day), weekend_batch, weekday_batch)
    switch(region_of(country), {"eu": eu_pipeline, "na": na_pipeline, "other": fallback_pipeline})
