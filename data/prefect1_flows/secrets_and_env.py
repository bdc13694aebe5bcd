"""Read config the way our jobs do: a Prefect secret for the API key,
environment variables (with a cast) for the tuning knobs."""
from prefect import Flow, task
from prefect.tasks.secrets import EnvVarSecret, PrefectSecret


@task
def build_client_config(api_key, batch_size, region, missing):
    return {
        "key_suffix": api_key[-4:],
        "batch_size": batch_size,
        "batch_size_type": type(batch_size).__name__,
        "region": region,
        "missing": missing,
    }


with Flow("secrets-env") as flow:
    key = PrefectSecret("REPORTING_API_KEY")
    batch = EnvVarSecret("REPORT_BATCH_SIZE", cast=int)
    region = EnvVarSecret("REPORT_REGION")
    missing = EnvVarSecret("REPORT_NOT_SET")
    build_client_config(key, batch, region, missing)
