"""The ``web`` source module: HTML pages crawled politely from start URLs, :class:`~modules.web_module.main.WebModule`."""
