"""diva-connector: extract, type and load Marqeta DiVA reporting exports."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
