"""Study files on top: their schema, and the plan that runs them as stages."""
