"""The HTTP layer: translates requests into calls on the sale service and answers back."""
