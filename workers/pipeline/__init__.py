"""The product's main job: a complete study through the models to results at the PACS."""
