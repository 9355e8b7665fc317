"""Labels from the generator's conditioning: where each class's token is attended (or where the
prediction moves when the class leaves the condition) says which pixels are that class."""
