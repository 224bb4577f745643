"""The library without Ray: config, data, tokenizer, models, layer strategies, losses,
acquisition and the report. Nothing under this package imports ``ray`` (a unit test proves
it), so it runs on machines where Ray is not installed."""
