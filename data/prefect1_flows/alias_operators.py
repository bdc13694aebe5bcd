"""Price calculator written against the `pf` alias, leaning on task
operators (+, *, [], ==) and on lists/dicts of tasks as arguments."""
import prefect as pf


@pf.task
def base_price(sku):
    return {"WID-1": 2.5, "WID-2": 19.99}[sku]


@pf.task
def shipping(country):
    return {"de": 4.0, "us": 9.5}[country]


@pf.task
def quote(lines, extras):
    return {"lines": lines, "extras": extras}


@pf.task
def tax_rate(country):
    return {"de": 0.19, "us": 0.07}[country]


with pf.Flow("price-calc") as flow:
    sku = pf.Parameter("sku", default="WID-2")
    qty = pf.Parameter("qty", default=3)
    country = pf.Parameter("country", default="de")

    unit = base_price(sku)
    subtotal = unit * qty
    rate = tax_rate(country)
    gross = subtotal + shipping(country)
    is_domestic = country == "de"
    q = quote([unit, subtotal, gross], {"domestic": is_domestic, "rate": rate})
    first_line = q["lines"][0]

flow.set_reference_tasks([q])
