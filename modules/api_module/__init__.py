"""HTTP JSON API source module: :class:`~modules.api_module.main.ApiModule` (registry ``type: api``)."""
