"""Pipeline files: validating them (file:line:column problems), loading them into Haystack pipelines, drawing them."""
