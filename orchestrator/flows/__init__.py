"""Where registered flows live and how they come back: storage
(`flows.storage`), loading flows from Python files (`flows.loading`), run
configs (`flows.run_configs`) and the JSON references both are stored as
(`flows.refs`)."""
