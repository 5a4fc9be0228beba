"""Which events are sent, with which columns, and where: filters, column selections, destination templates."""
