Feature: Results come home
  When a job ends, caseflow brings its results back before it marks the case
  as ended: every file the job created or changed in the case's folder on the
  GPU host, and the job's log (caseflow-job.log), land in a folder named like
  the case under "results" next to the inbox. A failed job's log comes home
  too: the person needs it most then.

  After a case has ended, caseflow can move its folder out of the inbox
  (archive), remove its folder on the GPU host once the results are home
  (remote_cleanup), and run a command of the operator's (on_finish). None of
  these ever changes how the case ended.

  Cases with a higher priority (in their case.yaml) take a free slot first.

  Ended cases can be pruned from caseflow's store, so that it stays small over
  the years; their results and archived folders stay where they are.

  Scenario: The results of a successful job come home next to the inbox
    Given caseflow is running
    When the case folder "lung_0001" is dropped into the inbox
    Then the case "lung_0001" ends in success
    And the results of "lung_0001" are output/result.txt, job_env.txt and caseflow-job.log
    And caseflow show "lung_0001" says where its results are

  Scenario: A failed job's log comes home
    Given caseflow is running
    When the case folder "lung_0002" whose job exits with code 3 is dropped into the inbox
    Then the case "lung_0002" ends in failure
    And the reason given for "lung_0002" is "job exited with code 3"
    And the job log among the results of "lung_0002" says "job of case"
    And caseflow show "lung_0002" prints the last lines of its job log

  Scenario: Finished case folders leave the inbox, and nothing is overwritten
    Given finished cases are archived to "done" and "failed"
    And an earlier case folder "lung_0003" is already in "done"
    And caseflow is running
    When the case folder "lung_0003" is dropped into the inbox
    And the case folder "lung_0004" whose job exits with code 2 is dropped into the inbox
    Then the case "lung_0003" ends in success
    And the case "lung_0004" ends in failure
    And the inbox becomes empty
    And the case folder "lung_0003" is in "done" under a new name, next to the earlier one
    And the case folder "lung_0004" is in "failed"
    And caseflow knows exactly 2 cases, and none of them vanished

  Scenario: A retried case is sent again from where it was archived
    Given finished cases are archived to "done" and "failed"
    And caseflow removes a case's folder on the GPU host when the case has ended
    And caseflow is running
    And the case folder "lung_0005" whose job exits with code 3 was dropped into the inbox
    And the case "lung_0005" has ended in failure
    And the case folder "lung_0005" is in "failed"
    And the folder of "lung_0005" is gone from the GPU host
    When the operator deletes the file "exit_code" from the archived folder "lung_0005"
    And the operator retries "lung_0005"
    Then the case "lung_0005" ends in success
    And the case folder "lung_0005" is in "done"
    And the results of "lung_0005" are output/result.txt, job_env.txt and caseflow-job.log

  Scenario: The folder on the GPU host is removed only after the results are home
    Given caseflow removes a case's folder on the GPU host after a success
    And the results folder has room for only 64 KB
    And caseflow is running
    When the case folder "lung_0006" whose job writes 1 MB of results is dropped into the inbox
    Then the case "lung_0006" stays running, retrying to fetch its results
    And the folder of "lung_0006" is still on the GPU host
    When the results folder has room again
    Then the case "lung_0006" ends in success once its results are home
    And the results of "lung_0006" are output/result.txt, output/big.bin, job_env.txt and caseflow-job.log
    And the folder of "lung_0006" is gone from the GPU host

  Scenario: A hook that fails is noted and changes nothing about the case
    Given the on_finish hook records the case it is run for and then exits with code 5
    And caseflow is running
    When the case folder "lung_0007" is dropped into the inbox
    Then the case "lung_0007" ends in success
    And the hook ran once, for "lung_0007" in success with exit code 0 and its results folder
    And caseflow show "lung_0007" notes "on_finish hook exited 5"
    And the case "lung_0007" shows no reason

  Scenario: A case with a higher priority takes the next free slot
    Given caseflow is running
    And the case "lung_0010" for gpu_b is running and waits to be released
    And the case "lung_0011" for gpu_b waits in the queue
    And the case "lung_0012" for gpu_b with priority 5 waits in the queue
    When the job of "lung_0010" is released
    Then the case "lung_0012" runs on slot 0 of gpu_b
    And the case "lung_0011" is still queued

  Scenario: Ended cases leave the store; their results and archived folders stay
    Given finished cases are archived to "done" and "failed"
    And caseflow is running
    And the case folder "lung_0020" was dropped into the inbox
    And the case "lung_0020" has ended in success
    And the case folder "lung_0020" is in "done"
    When the operator prunes the cases that ended before tomorrow, exporting them to "pruned.jsonl"
    Then caseflow no longer knows "lung_0020"
    And "pruned.jsonl" holds "lung_0020" with its history, from detected to success
    And the results of "lung_0020" stay in "results"
    And the case folder "lung_0020" is still in "done"

  Scenario: A case whose folder is still in the inbox stays, so that it never runs again
    Given caseflow is running
    And the case folder "lung_0021" was dropped into the inbox
    And the case "lung_0021" has ended in success
    When the operator prunes the cases that ended before tomorrow
    Then caseflow says it kept "lung_0021", whose folder is still in the inbox
    When caseflow is stopped
    And caseflow starts
    Then caseflow knows "lung_0021" as one case, whose job ran once
