"""A house Task subclass with defaults_from_attrs, as in our shared
`company_tasks` package (inlined here)."""
from prefect import Flow, Parameter, Task
from prefect.utilities.tasks import defaults_from_attrs


class FormatCurrency(Task):
    """Formats amounts; currency and decimals can be set at init or at run."""

    def __init__(self, currency="EUR", decimals=2, **kwargs):
        self.currency = currency
        self.decimals = decimals
        super().__init__(**kwargs)

    @defaults_from_attrs("currency", "decimals")
    def run(self, amount, currency=None, decimals=None):
        self.logger.info("formatting %s in %s", amount, currency)
        return f"{amount:,.{decimals}f} {currency}"


class Sum(Task):
    def run(self, values):
        return sum(values)


eur = FormatCurrency(name="format eur")
yen = FormatCurrency(currency="JPY", decimals=0, name="format yen")

with Flow("currency-format") as flow:
    amounts = Parameter("amounts", default=[1200.5, 99.99])
    total = Sum(name="sum amounts")(amounts)
    eur(total)
    yen(total)
    eur(total, currency="USD", task_args={"name": "format usd"})
