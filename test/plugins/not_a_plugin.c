/* A shared object that is not an mqgate plugin at all. */
int not_a_plugin_answer(void) { return 42; }
