"""The REST API over the service layer (``trimtab.app.service``) and the dashboard's
static files: ``create_app`` (``trimtab.api.app``), started by ``trimtab serve`` or
``trimtab run --api`` (``trimtab.api.server``)."""
