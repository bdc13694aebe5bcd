"""The smallest useful flow: a parameter, two tasks, a log line."""

from orchestrator import Flow, Parameter, get_logger, task


@task
def greet(name):
    return f"Hello, {name}!"


@task
def shout(text):
    get_logger().info(text.upper())


with Flow("hello") as flow:
    shout(greet(Parameter("name", default="world")))

if __name__ == "__main__":
    flow.run()
