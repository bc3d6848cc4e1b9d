"""`hearth serve`: Hearth behind the OpenAI HTTP API."""
