"""Registered experiments. Library code never imports these modules."""
