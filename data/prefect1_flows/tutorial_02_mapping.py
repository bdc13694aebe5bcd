# Tutorial, part 2: fan out with .map() and reduce the results.
from prefect import Flow, Parameter, task, unmapped


@task
def list_pages(count):
    return list(range(1, count + 1))


@task
def fetch_page(page, page_size):
    # Each "page" holds page_size consecutive item ids.
    start = (page - 1) * page_size
    return [start + i for i in range(page_size)]


@task
def count_items(items):
    return len(items)


@task
def total(counts):
    return sum(counts)


with Flow("tutorial-mapping") as flow:
    pages = list_pages(Parameter("pages", default=3))
    size = Parameter("page_size", default=4)
    items = fetch_page.map(pages, unmapped(size))
    counts = count_items.map(items)
    grand_total = total(counts)

if __name__ == "__main__":
    state = flow.run()
    print(state.result[grand_total].result)
